# mmseg 1.2.2's optimizer for UperNet-ViT and DPT on ViT-B/16 (vit_vit-b16_mln_upernet_8xb2-80k,
# dpt_vit-b16_8xb2-160k): AdamW lr 6e-5, weight decay 0.01 except position embedding, class token and
# norms (its schedule: ./cityscapes_80k_warmup.py). AdamW's update and decay act elementwise, so the fold
# stays a symmetry of training.
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
