# SETR-Naive on ViT-Ti/16 (timm's vit_tiny_patch16_224: 192 wide, 12 layers, 3 heads; uniform 127.5
# normalization like the paper's ViTs) with 64x64 crops and 20 deterministic iterations: the full
# configuration at a size that trains in seconds on a CPU (tests, benchmarks).
_base_ = ['../../_base_/setr_vit-l16_naive.py']
crop_size = (64, 64)
norm_cfg = dict(type='BN', requires_grad=True)  # SyncBN needs CUDA, also in a CPU distributed run
head = dict(
    type='SETRUPHead',
    in_channels=192,
    channels=32,
    num_classes=19,
    dropout_ratio=0,
    norm_cfg=norm_cfg,
    num_convs=1,
    up_scale=4,
    kernel_size=1,
    align_corners=False)
model = dict(
    data_preprocessor=dict(size=crop_size),
    backbone=dict(img_size=crop_size, embed_dims=192, num_layers=12, num_heads=3, out_indices=(2, 5, 8, 11)),
    decode_head=dict(in_channels=192, channels=32, norm_cfg=norm_cfg),
    auxiliary_head=[
        dict(head, in_index=i, loss_decode=dict(type='CrossEntropyLoss', loss_weight=0.4)) for i in range(3)
    ],
    # Windows of twice the crop (the position embedding interpolated 2x), overlapping by 32 px (stride: whole
    # blocks) so that maps show no seams at window edges: a 512x1024 image in 55 passes (benchmarks/bench_eval.py);
    # the crop with stride 32 took 465 passes, 14-18 s. On the small-scale Table I baseline, 128x128 windows
    # scored mIoU 47.3 against the crop's 45.9; whole images or 256x256 windows lost 6 points.
    test_cfg=dict(crop_size=(128, 128), stride=(96, 96)))
train_pipeline = [
    dict(type='LoadZarrImage'),
    dict(type='LoadZarrAnnotations'),
    dict(type='BlockAlignedRandomCrop', crop_size=crop_size, block_size=16, cat_max_ratio=0.75),
    dict(type='KeySafePhotoMetricDistortion'),
    dict(type='PackSegInputs'),
]
train_dataloader = dict(batch_size=2, num_workers=0, persistent_workers=False, dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(num_workers=0, persistent_workers=False)
test_dataloader = val_dataloader
env_cfg = dict(cudnn_benchmark=False, dist_cfg=dict(backend='gloo'))
# DDP on the module's own device: mmengine's default device_ids=[LOCAL_RANK] fails on a CPU, and None
# is also right for a module on one GPU. Used by distributed runs only (--launcher pytorch).
model_wrapper_cfg = dict(type='MMDistributedDataParallel', device_ids=None, broadcast_buffers=False)
randomness = dict(seed=0, deterministic=True)
param_scheduler = [dict(type='PolyLR', eta_min=1e-4, power=0.9, begin=0, end=20, by_epoch=False)]
train_cfg = dict(max_iters=20, val_interval=1000)
default_hooks = dict(logger=dict(interval=1), checkpoint=dict(interval=10))
