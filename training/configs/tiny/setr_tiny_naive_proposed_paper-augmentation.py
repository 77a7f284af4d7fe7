# Proposed, with the paper's augmentation applied in the cloud to the encrypted images, at the tiny
# size (see ../setr_vit-b16_naive_8xb1-80k_cityscapes-768x768_proposed_paper-augmentation.py): resize
# by 0.5-2.0 around (512, 256), the small-scale Table I's image size (width, height), unaligned crops,
# flips and per-channel photometric distortion, explicitly allowed on ciphertext.
_base_ = ['./setr_tiny_naive_proposed.py']
train_pipeline = [
    dict(type='LoadZarrImage'),
    dict(type='LoadZarrAnnotations'),
    dict(type='RandomResize', scale=(512, 256), ratio_range=(0.5, 2.0), keep_ratio=True),
    dict(type='RandomCrop', crop_size=(64, 64), cat_max_ratio=0.75),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PhotoMetricDistortion'),
    dict(type='PackSegInputs'),
]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline, allow_key_unsafe_transforms=True))
