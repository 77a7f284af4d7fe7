"""mmseg dataset over one split of the bundle's dataset store (local path or fsspec URL such as ``s3://``).

Store layout: see :class:`contract.formats.StoreAttributes` (per split, ``images`` uint8 RGB and, except
for unlabelled splits, ``labels`` uint8 class indices, 255 ignored, of one size or of many; the split
group's attributes name every sample and its size). What the labels mean (class names, palette, ignore
index, ``reduce_zero_label``) is the store's dataset description: it becomes the dataset's metainfo. The
dataset reads the bundle it is given through the manifest the run verified (training.verified_store): nothing else.
"""

from __future__ import annotations

from training import mmcv_compat

# mmseg imports mmcv.ops: the stand-in must be there first. Usually training.plugin has done it; a
# dataloader worker started with 'spawn' imports this module first, to unpickle the dataset.
mmcv_compat.install()

from mmseg.datasets import BaseSegDataset
from mmseg.registry import DATASETS

from contract.errors import UserError, quoted
from contract.formats import DatasetDescription, SplitAttributes
from training.verified_store import open_store, store_attributes
from training.transforms import key_unsafe_transforms


def metainfo(description: DatasetDescription) -> dict:
    """mmseg's dataset metainfo of a store's dataset description."""
    return dict(classes=description.classes, palette=[list(colour) for colour in description.palette])


@DATASETS.register_module()
class ZarrSegDataset(BaseSegDataset):
    """The samples of one split of a verified bundle's dataset store, with the store's classes and palette.

    ``bundle`` is the bundle's location and ``manifest_sha256`` the sha256 of the manifest the run
    verified (training.resolve fills it in). Every sample's data info names the bundle, split and
    index (and, in a split of many sizes, where its pixels lie); the loading transforms
    (``LoadZarrImage``, ``LoadZarrAnnotations``) read the arrays, so nothing opened is pickled into
    dataloader workers. Samples the owner skipped are left out. On an encrypted store the pipeline must
    commute with the block transform (see :func:`training.transforms.key_unsafe_transforms`) unless
    ``allow_key_unsafe_transforms`` is set, as for reproducing the paper's augmentation.
    """

    METAINFO: dict = dict()  # the store's: see metainfo()

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
        root = open_store(self.bundle, self.manifest_sha256, self.storage_options)
        self.where = f"{self.bundle}/dataset.zarr"
        self.store_attrs = store_attributes(root, self.where)
        if split not in self.store_attrs.splits:
            raise UserError(f"{quoted(self.where)}: no {split} split (the store holds {', '.join(self.store_attrs.splits)})")
        self.samples = SplitAttributes.parse(dict(root[split].attrs), f"{self.where}/{split}/zarr.json")
        description = self.store_attrs.dataset
        stored = dict(metainfo=metainfo(description), reduce_zero_label=description.reduce_zero_label, ignore_index=description.ignore_index)
        for name in stored:
            if kwargs.pop(name, None) not in (None, stored[name]):
                raise UserError(
                    f"the config's {split} dataset sets {name}, but {quoted(self.where)} says what its labels mean: "
                    f"its dataset description ({description.name}, {len(description.classes)} classes); remove the setting"
                )
        super().__init__(**stored, **kwargs)

    def load_data_list(self) -> list[dict]:
        attrs = self.store_attrs
        if attrs.cipher is not None and not self.allow_key_unsafe_transforms:
            unsafe = key_unsafe_transforms(self.pipeline.transforms, attrs.cipher.block_size, attrs.cipher.negative_positive)
            if unsafe:
                raise UserError(
                    f"{quoted(self.where)}: the data is encrypted, but {', '.join(unsafe)} in the pipeline does not "
                    "commute with the block transform and would destroy what the encrypted patch embedding "
                    "can read; remove it, or set allow_key_unsafe_transforms=True in the dataset config"
                )
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
        placement = attrs.placement(self.split, self.samples.sizes)
        skipped = {skip.name for skip in attrs.skipped if skip.split == self.split}
        return [  # a ragged split's sample names where its pixels lie: (first pixel, height, width)
            dict(common, sample_index=i, img_path=name, **({} if start is None else {"sample_span": (start, *shape)}))
            for i, (name, (start, shape)) in enumerate(zip(self.samples.names, placement))
            if name not in skipped
        ]
