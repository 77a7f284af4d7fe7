"""Each dataset layout walked end to end, owner to cloud and back (checks/datasets.py, its command lines run in
this process): the suite walks each layout with one key option, ``python -m checks.datasets`` every layout
with both."""

import pytest

from checks.datasets import in_process_step, walk


@pytest.mark.slow  # about 15 s each: training, testing and predicting, in this process
@pytest.mark.parametrize(
    "layout, negative_positive",
    [("cityscapes", False), ("ade20k", True), ("voc", False), ("custom", True)],
    ids=["cityscapes-shuffle", "ade20k-negative-positive", "voc-shuffle", "custom-negative-positive"],
)
def test_a_layout_walked_from_the_owner_to_the_cloud_and_back(layout, negative_positive, tmp_path, dask_scheduler):
    found = walk(layout, negative_positive, tmp_path, in_process_step, scheduler=dask_scheduler)
    assert found.maps_sized and found.decrypted
    assert found.differing == 0  # the owner's plain model predicts on plain images what the cloud predicted on encrypted ones
