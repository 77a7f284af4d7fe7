# mmseg 1.2.2's optimization for UperNet-ViT and DPT on ViT-B/16 (vit_vit-b16_mln_upernet_8xb2-80k,
# dpt_vit-b16_8xb2-160k): AdamW lr 6e-5, weight decay 0.01 except position embedding, class token and
# norms, linear warm-up over 1500 iterations then linear decay to 0 at 80k; batch 2 on 8 GPUs.
# AdamW's update and decay act elementwise, so the fold stays a symmetry of training.
_base_ = ['./vit-b16.py']
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
    dict(type='LinearLR', start_factor=1e-6, by_epoch=False, begin=0, end=1500),
    dict(type='PolyLR', eta_min=0.0, power=1.0, begin=1500, end=80000, by_epoch=False),
]
train_dataloader = dict(batch_size=2)
