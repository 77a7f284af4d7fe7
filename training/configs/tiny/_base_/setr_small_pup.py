# SETR-PUP on ViT-S/16: the ViT-Ti/16 configuration of ./setr_tiny_pup.py with ViT-S's width and heads.
_base_ = ['./setr_tiny_pup.py']
head = dict(
    type='SETRUPHead',
    in_channels=384,
    channels=32,
    num_classes=19,
    dropout_ratio=0,
    norm_cfg=dict(type='BN', requires_grad=True),
    kernel_size=3,
    align_corners=False)
model = dict(
    backbone=dict(embed_dims=384, num_heads=6),
    decode_head=dict(in_channels=384),
    auxiliary_head=[
        dict(head, in_index=i, num_convs=2, up_scale=4, loss_decode=dict(type='CrossEntropyLoss', loss_weight=0.4))
        for i in range(3)
    ])
