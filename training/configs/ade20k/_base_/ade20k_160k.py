# Everything of an ADE20K run but the model: the bundle's data (images and labels as the owner stored them,
# see docs/datasets.md) with 512x512 crops, mmseg's default runtime and its 160k schedule for ADE20K (poly,
# 160k iterations, validation and checkpoints every 16k, batch 2 on 8 GPUs): ../../_base_/cityscapes_80k.py
# at those settings. A config is a model (./<segmentor>.py) and one of these.
_base_ = ['../../_base_/cityscapes_80k.py']
crop_size = (512, 512)
train_pipeline = [dict(step, crop_size=crop_size) if 'crop_size' in step else step for step in _base_.train_pipeline]
train_dataloader = dict(batch_size=2, dataset=dict(pipeline=train_pipeline))
param_scheduler = [dict(type='PolyLR', eta_min=1e-4, power=0.9, begin=0, end=160000, by_epoch=False)]
train_cfg = dict(max_iters=160000, val_interval=16000)
default_hooks = dict(checkpoint=dict(interval=16000))
