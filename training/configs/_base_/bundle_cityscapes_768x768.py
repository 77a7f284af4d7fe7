# Cityscapes from the bundle's Zarr store, with augmentation that commutes with the block transform
# (training/transforms.py); mmseg's SETR Cityscapes settings otherwise.
custom_imports = dict(
    imports=['training.datasets', 'training.transforms', 'training.checkpoint'],
    allow_failed_imports=False)
crop_size = (768, 768)
store = '{bundle}/dataset.zarr'  # training.train and training.test put the --bundle location in
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
