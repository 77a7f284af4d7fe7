# Cityscapes from the bundle's Zarr store, with augmentation that commutes with the block transform
# (training/transforms.py); mmseg's SETR Cityscapes settings otherwise.
# The bundle: its one setting. `python -m training.train --bundle LOCATION` sets it, as do mmseg's own
# tools/train.py and tools/test.py with `--cfg-options bundle=LOCATION` (cipherseg's loops, in
# schedule_80k.py, verify the bundle and resolve every '{bundle}'; training/resolve.py). `signer`: the
# owner's public signer file (checks who published it); `storage_options`: fsspec options for s3:// and
# the like; `min_sequence`: accept an older publication than the newest one accepted before.
bundle = None
signer = None
storage_options = dict()
min_sequence = None
custom_imports = dict(imports=['training.plugin'], allow_failed_imports=False)
crop_size = (768, 768)
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
    dataset=dict(type='ZarrSegDataset', bundle='{bundle}', split='train', pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=1,
    num_workers=2,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(type='ZarrSegDataset', bundle='{bundle}', split='val', pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(type='IoUMetric', iou_metrics=['mIoU'])
test_evaluator = val_evaluator
