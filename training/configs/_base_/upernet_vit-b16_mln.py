# UperNet on ViT-B/16 with a multi-level neck (mmseg 1.2.2's upernet_vit-b16_ln_mln.py and
# vit_vit-b16_mln_upernet_8xb2-80k_ade20k-512x512.py) for Cityscapes: the neck rescales layers 2, 5, 8
# and 11 by 4, 2, 1 and 1/2 into a pyramid for UPerHead, with an FCN auxiliary head on the last level.
_base_ = ['./vit-b16_adamw.py']
norm_cfg = dict(type='SyncBN', requires_grad=True)  # plain BN when not distributed (mmengine)
model = dict(
    neck=dict(type='MultiLevelNeck', in_channels=[768, 768, 768, 768], out_channels=768, scales=[4, 2, 1, 0.5]),
    decode_head=dict(
        type='UPerHead',
        in_channels=[768, 768, 768, 768],
        in_index=[0, 1, 2, 3],
        pool_scales=(1, 2, 3, 6),
        channels=512,
        dropout_ratio=0.1,
        num_classes=19,
        norm_cfg=norm_cfg,
        align_corners=False,
        loss_decode=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0)),
    auxiliary_head=dict(
        type='FCNHead',
        in_channels=768,
        in_index=3,
        channels=256,
        num_convs=1,
        concat_input=False,
        dropout_ratio=0.1,
        num_classes=19,
        norm_cfg=norm_cfg,
        align_corners=False,
        loss_decode=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=0.4)))
