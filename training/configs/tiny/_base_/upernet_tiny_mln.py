# UperNet-ViT at the tiny size of ./setr_tiny_naive.py: ../../_base_/upernet_vit-b16_mln.py on ViT-Ti/16
# with narrower heads.
_base_ = ['./vit_tiny_adamw.py']
norm_cfg = dict(type='BN', requires_grad=True)
model = dict(
    neck=dict(type='MultiLevelNeck', in_channels=[192, 192, 192, 192], out_channels=192, scales=[4, 2, 1, 0.5]),
    decode_head=dict(
        _delete_=True,  # not a SETRUPHead: none of the naive head's settings apply
        type='UPerHead',
        in_channels=[192, 192, 192, 192],
        in_index=[0, 1, 2, 3],
        pool_scales=(1, 2, 3, 6),
        channels=64,
        dropout_ratio=0.1,
        num_classes=19,
        norm_cfg=norm_cfg,
        align_corners=False,
        loss_decode=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0)),
    auxiliary_head=dict(
        _delete_=True,
        type='FCNHead',
        in_channels=192,
        in_index=3,
        channels=32,
        num_convs=1,
        concat_input=False,
        dropout_ratio=0.1,
        num_classes=19,
        norm_cfg=norm_cfg,
        align_corners=False,
        loss_decode=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=0.4)))
