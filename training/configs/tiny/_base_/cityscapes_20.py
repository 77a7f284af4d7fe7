# ../../_base_/cityscapes_80k.py at a size that trains in seconds on a CPU (tests, benchmarks): 64x64
# crops, batch 2, 20 deterministic iterations, no loader processes. The tiny models (./*_tiny_*.py,
# ./*_small_*.py) are the full ones at ViT-Ti/16 and ViT-S/16 widths, with this crop.
_base_ = ['../../_base_/cityscapes_80k.py']
crop_size = (64, 64)
train_pipeline = [dict(step, crop_size=crop_size) if 'crop_size' in step else step for step in _base_.train_pipeline]
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
