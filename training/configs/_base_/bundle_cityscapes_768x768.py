# Cityscapes from the bundle's Zarr store, with augmentation that commutes with the block transform
# (training/transforms.py); mmseg's SETR Cityscapes settings otherwise.
# The bundle: its one setting. `python -m training.train --bundle LOCATION` sets it, as does mmseg's own
# tools/train.py with `--cfg-options bundle=LOCATION` (runner_type: training/runner.py checks the bundle
# and resolves every '{bundle}' path). `signer`: the owner's public signer file (checks who published
# it); `storage_options`: fsspec options for s3:// and the like.
bundle = None
signer = None
storage_options = dict()
runner_type = 'CipherSegRunner'
custom_imports = dict(imports=['training.plugin'], allow_failed_imports=False)
crop_size = (768, 768)
store = '{bundle}/dataset.zarr'
train_pipeline = [
    dict(type='LoadZarrImage'),
    dict(type='LoadZarrAnnotations'),
    dict(type='BlockAlignedRandomCrop', crop_size=crop_size, block_size=16, cat_max_ratio=0.75),
    dict(type='KeySafePhotoMetricDistortion'),
    dict(type='PackSegInputs'),
]
test_pipeline = [
    dict(type='LoadZarrImage'),
    dict(type='LoadZarrAnnotations'),
    dict(type='PackSegInputs'),
]
train_dataloader = dict(
    batch_size=1,
    num_workers=2,
    persistent_workers=True,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    dataset=dict(type='ZarrSegDataset', store=store, split='train', pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=1,
    num_workers=2,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(type='ZarrSegDataset', store=store, split='val', pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(type='IoUMetric', iou_metrics=['mIoU'])
test_evaluator = val_evaluator
