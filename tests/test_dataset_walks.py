"""Dataset layouts walked end to end, owner to cloud and back (checks/datasets.py, its command lines run in this
process): ADE20K's many sizes and JPEGs with the negative-positive key, and an owner's own dataset described in
a [dataset] table with the block shuffle. ``python -m checks.datasets`` walks every layout with both key
options; the loading of every layout is the oracle's (test_datasets.py), Cityscapes' journey test_cloud_lifecycle's."""

import pytest

from checks.datasets import in_process_step, walk


@pytest.mark.slow  # about 15 s each: training, testing and predicting, in this process
@pytest.mark.parametrize(
    "layout, negative_positive",
    [("ade20k", True), ("custom", False)],
    ids=["ade20k-negative-positive", "custom-shuffle"],
)
def test_a_layout_walked_from_the_owner_to_the_cloud_and_back(layout, negative_positive, tmp_path, dask_scheduler):
    found = walk(layout, negative_positive, tmp_path, in_process_step, scheduler=dask_scheduler)
    assert found.maps_sized and found.decrypted
    assert found.differing == 0  # the owner's plain model predicts on plain images what the cloud predicted on encrypted ones
