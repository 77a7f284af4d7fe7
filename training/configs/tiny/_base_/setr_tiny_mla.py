# SETR-MLA at the tiny size of ./setr_tiny_naive.py: multi-level aggregation of four layers, four
# auxiliary heads, lr 0.002 (as ../../_base_/setr_vit-l16_mla.py, narrower).
_base_ = ['./setr_tiny_naive.py']
norm_cfg = dict(type='BN', requires_grad=True)
model = dict(
    backbone=dict(with_cls_token=False),
    neck=dict(
        type='MLANeck',
        in_channels=[192, 192, 192, 192],
        out_channels=64,
        norm_cfg=norm_cfg,
        act_cfg=dict(type='ReLU')),
    decode_head=dict(
        _delete_=True,  # not a SETRUPHead: none of the naive head's settings apply
        type='SETRMLAHead',
        in_channels=(64, 64, 64, 64),
        channels=128,  # 4 x mla_channels
        in_index=(0, 1, 2, 3),
        dropout_ratio=0,
        mla_channels=32,
        num_classes=19,
        norm_cfg=norm_cfg,
        align_corners=False,
        loss_decode=dict(type='CrossEntropyLoss', loss_weight=1.0)),
    auxiliary_head=[
        dict(
            type='FCNHead',
            in_channels=64,
            channels=64,
            in_index=i,
            dropout_ratio=0,
            num_convs=0,
            kernel_size=1,
            concat_input=False,
            num_classes=19,
            align_corners=False,
            loss_decode=dict(type='CrossEntropyLoss', loss_weight=0.4)) for i in range(4)
    ])
optim_wrapper = dict(optimizer=dict(lr=0.002))
