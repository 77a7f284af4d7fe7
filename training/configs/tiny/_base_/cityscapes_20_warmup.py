# ../../_base_/cityscapes_80k_warmup.py's schedule (linear warm-up, then linear decay) at the tiny size of
# ./cityscapes_20.py: 2 of its 20 iterations of warm-up.
_base_ = ['./cityscapes_20.py']
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-6, by_epoch=False, begin=0, end=2),
    dict(type='PolyLR', eta_min=0.0, power=1.0, begin=2, end=20, by_epoch=False),
]
