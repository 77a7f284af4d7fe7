# ../../_base_/vit-b16_adamw.py's optimization (AdamW, no decay for position embedding, class token and
# norms, linear warm-up then linear decay) on the tiny ViT-Ti/16 of ./setr_tiny_naive.py, scaled to its
# 20 iterations: 2 of warm-up. Inference as the SETR tiny base: 128x128 windows without overlap.
_base_ = ['./setr_tiny_naive.py']
model = dict(backbone=dict(interpolate_mode='bicubic'))
optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=0.00006, betas=(0.9, 0.999), weight_decay=0.01),
    paramwise_cfg=dict(
        custom_keys={
            'pos_embed': dict(decay_mult=0.),
            'cls_token': dict(decay_mult=0.),
            'norm': dict(decay_mult=0.)
        }))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-6, by_epoch=False, begin=0, end=2),
    dict(type='PolyLR', eta_min=0.0, power=1.0, begin=2, end=20, by_epoch=False),
]
