"""mmseg dataset over one split of the bundle's Zarr store (local path or fsspec URL such as ``s3://``).

Store layout (written by the owner's pipeline/dataset.py): a Zarr v3 group whose attributes say
``format: cipherseg-dataset``, ``encrypted``, ``key_id``, ``block_size``, ``negative_positive`` and
``channel_order``; per split a group ``<split>/`` with ``images`` uint8 (N, H, W, 3) and, except for
unlabelled splits, ``labels`` uint8 (N, H, W) in Cityscapes trainIds (255 ignored); the split
group's ``names`` attribute names every sample.
"""

from __future__ import annotations

from mmseg.datasets import BaseSegDataset, CityscapesDataset
from mmseg.registry import DATASETS

from training.store import open_store, store_attrs
from training.transforms import key_unsafe_transforms


@DATASETS.register_module()
class ZarrSegDataset(BaseSegDataset):
    """Cityscapes-class samples of one split of a cipherseg dataset store.

    Every sample's data info names the store, split and index; the loading transforms
    (``LoadZarrImage``, ``LoadZarrAnnotations``) read the arrays, so nothing opened is pickled
    into dataloader workers. On an encrypted store the pipeline must commute with the block
    transform (see :func:`training.transforms.key_unsafe_transforms`) unless
    ``allow_key_unsafe_transforms`` is set, as for reproducing the paper's augmentation.
    """

    METAINFO = CityscapesDataset.METAINFO

    def __init__(
        self,
        store: str,
        split: str,
        storage_options: dict | None = None,
        allow_key_unsafe_transforms: bool = False,
        **kwargs,
    ) -> None:
        self.store = store
        self.split = split
        self.storage_options = storage_options or {}
        self.allow_key_unsafe_transforms = allow_key_unsafe_transforms
        super().__init__(**kwargs)

    def load_data_list(self) -> list[dict]:
        attrs = store_attrs(self.store, self.storage_options)
        self.store_attrs = attrs
        if attrs.get("encrypted") and not self.allow_key_unsafe_transforms:
            unsafe = key_unsafe_transforms(self.pipeline.transforms, attrs["block_size"], attrs["negative_positive"])
            if unsafe:
                raise ValueError(
                    f"{self.store}: the data is encrypted, but {', '.join(unsafe)} in the pipeline does not "
                    "commute with the block transform and would destroy what the encrypted patch embedding "
                    "can read; remove it, or set allow_key_unsafe_transforms=True in the dataset config"
                )
        group = open_store(self.store, self.storage_options)[self.split]
        names = group.attrs.get("names") or [f"{self.split}/{i:06d}" for i in range(group["images"].shape[0])]
        common = dict(
            zarr_store=self.store,
            zarr_split=self.split,
            storage_options=self.storage_options,
            label_map=self.label_map,
            reduce_zero_label=self.reduce_zero_label,
            seg_fields=[],
        )
        return [dict(common, sample_index=i, img_path=name) for i, name in enumerate(names)]
