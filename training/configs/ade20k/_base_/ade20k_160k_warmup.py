# ./ade20k_160k.py with mmseg 1.2.2's schedule for UperNet-ViT, DPT and BEiT on ADE20K: linear warm-up over
# 1500 iterations, then linear decay to 0 at 160k.
_base_ = ['./ade20k_160k.py']
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-6, by_epoch=False, begin=0, end=1500),
    dict(type='PolyLR', eta_min=0.0, power=1.0, begin=1500, end=160000, by_epoch=False),
]
