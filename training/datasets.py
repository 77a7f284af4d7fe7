"""mmseg dataset over one split of the bundle's dataset store (local path or fsspec URL such as ``s3://``).

Store layout: see :class:`contract.formats.StoreAttributes` (per split, ``images`` uint8 (N, H, W, 3)
and, except for unlabelled splits, ``labels`` uint8 (N, H, W) in Cityscapes trainIds, 255 ignored;
the split group's ``names`` attribute names every sample). The dataset reads the bundle it is given
through the manifest the run verified (training.verified_store): nothing else.
"""

from __future__ import annotations

from training import mmcv_compat

# mmseg imports mmcv.ops: the stand-in must be there first. Usually training.plugin has done it; a
# dataloader worker started with 'spawn' imports this module first, to unpickle the dataset.
mmcv_compat.install()

from mmseg.datasets import BaseSegDataset, CityscapesDataset
from mmseg.registry import DATASETS

from contract.errors import UserError, quoted
from contract.formats import SplitAttributes
from training.verified_store import open_store, store_attributes
from training.transforms import key_unsafe_transforms


@DATASETS.register_module()
class ZarrSegDataset(BaseSegDataset):
    """Cityscapes-class samples of one split of a verified bundle's dataset store.

    ``bundle`` is the bundle's location and ``manifest_sha256`` the sha256 of the manifest the run
    verified (training.resolve fills it in). Every sample's data info names the bundle, split and
    index; the loading transforms (``LoadZarrImage``, ``LoadZarrAnnotations``) read the arrays, so
    nothing opened is pickled into dataloader workers. On an encrypted store the pipeline must commute with the block
    transform (see :func:`training.transforms.key_unsafe_transforms`) unless
    ``allow_key_unsafe_transforms`` is set, as for reproducing the paper's augmentation.
    """

    METAINFO = CityscapesDataset.METAINFO

    def __init__(
        self,
        bundle: str,
        split: str,
        manifest_sha256: str | None = None,
        storage_options: dict | None = None,
        allow_key_unsafe_transforms: bool = False,
        **kwargs,
    ) -> None:
        if manifest_sha256 is None:
            raise UserError(
                f"the {split} dataset of {quoted(bundle)} is not of a verified bundle: cipherseg's loops "
                "(CipherSegIterBasedTrainLoop, CipherSegValLoop, CipherSegTestLoop) verify it and pin its manifest"
            )
        self.bundle, self.manifest_sha256 = bundle, manifest_sha256
        self.split = split
        self.storage_options = storage_options or {}
        self.allow_key_unsafe_transforms = allow_key_unsafe_transforms
        super().__init__(**kwargs)

    def load_data_list(self) -> list[dict]:
        root = open_store(self.bundle, self.manifest_sha256, self.storage_options)
        where = f"{self.bundle}/dataset.zarr"
        attrs = store_attributes(root, where)
        self.store_attrs = attrs
        if attrs.cipher is not None and not self.allow_key_unsafe_transforms:
            unsafe = key_unsafe_transforms(self.pipeline.transforms, attrs.cipher.block_size, attrs.cipher.negative_positive)
            if unsafe:
                raise UserError(
                    f"{quoted(where)}: the data is encrypted, but {', '.join(unsafe)} in the pipeline does not "
                    "commute with the block transform and would destroy what the encrypted patch embedding "
                    "can read; remove it, or set allow_key_unsafe_transforms=True in the dataset config"
                )
        if self.split not in attrs.splits:
            raise UserError(f"{quoted(where)}: no {self.split} split (the store holds {', '.join(attrs.splits)})")
        names = SplitAttributes.parse(dict(root[self.split].attrs), f"{where}/{self.split}/zarr.json").names
        common = dict(
            negative_positive=attrs.cipher is not None and attrs.cipher.negative_positive,
            bundle=self.bundle,
            manifest_sha256=self.manifest_sha256,
            zarr_split=self.split,
            storage_options=self.storage_options,
            label_map=self.label_map,
            reduce_zero_label=self.reduce_zero_label,
            seg_fields=[],
        )
        return [dict(common, sample_index=i, img_path=name) for i, name in enumerate(names)]
