# Everything of a Cityscapes run but the model: the bundle's data (./bundle_cityscapes_768x768.py), mmseg's
# default runtime and SETR's Cityscapes schedule (poly, 80k iterations, batch 1 on 8 GPUs). A config is a
# model (./<segmentor>.py, with its optimizer) and one of these.
_base_ = ['./bundle_cityscapes_768x768.py']
default_scope = 'mmseg'
env_cfg = dict(
    cudnn_benchmark=True,
    mp_cfg=dict(mp_start_method='fork', opencv_num_threads=0),
    dist_cfg=dict(backend='nccl'))
vis_backends = [dict(type='LocalVisBackend')]
# Named after the run (mmengine's default), so that runs in one process (tests) do not share one visualizer.
visualizer = dict(type='SegLocalVisualizer', vis_backends=vis_backends)
log_processor = dict(by_epoch=False)
log_level = 'INFO'
load_from = None
resume = False
param_scheduler = [dict(type='PolyLR', eta_min=1e-4, power=0.9, begin=0, end=80000, by_epoch=False)]
# mmengine's loops, on the verified bundle only (training/resolve.py).
train_cfg = dict(type='CipherSegIterBasedTrainLoop', max_iters=80000, val_interval=8000)
val_cfg = dict(type='CipherSegValLoop')
test_cfg = dict(type='CipherSegTestLoop')
default_hooks = dict(
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=50, log_metric_by_epoch=False),
    param_scheduler=dict(type='ParamSchedulerHook'),
    checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=8000),
    sampler_seed=dict(type='DistSamplerSeedHook'),
    visualization=dict(type='SegVisualizationHook'),
    progress=dict(type='ProgressHook'))  # images done and rate in validation and testing (training/progress.py)
# What the method expects of the bundle (training/hooks.py): the proposed method by default.
custom_hooks = [dict(type='CipherSegCheckHook', data='encrypted', checkpoint='encrypted')]
