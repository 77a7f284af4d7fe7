# Proposed, with the paper's augmentation applied in the cloud to the encrypted images (mmseg's SETR
# Cityscapes pipeline), as the paper's experiments did. Resizing, flipping, unaligned crops and the
# per-channel photometric steps do not commute with the block transform (training/transforms.py), so
# the dataset refuses them on encrypted data unless allow_key_unsafe_transforms=True says it is meant.
# The key-safe alternative: augment before encrypting (the owner), crop and photometric in the cloud.
_base_ = ['./setr_vit-b16_naive_8xb1-80k_cityscapes-768x768_proposed.py']
train_pipeline = [
    dict(type='LoadZarrImage'),
    dict(type='LoadZarrAnnotations'),
    dict(type='RandomResize', scale=(2048, 1024), ratio_range=(0.5, 2.0), keep_ratio=True),
    dict(type='RandomCrop', crop_size=(768, 768), cat_max_ratio=0.75),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PhotoMetricDistortion'),
    dict(type='PackSegInputs'),
]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline, allow_key_unsafe_transforms=True))
