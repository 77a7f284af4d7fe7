# SETR-Naive on ViT-S/16 (timm's vit_small_patch16_224: 384 wide, 12 layers, 6 heads): the ViT-Ti/16
# configuration of ./setr_tiny_naive.py (crops, heads, schedule, inference) with ViT-S's width and heads.
_base_ = ['./setr_tiny_naive.py']
head = dict(
    type='SETRUPHead',
    in_channels=384,
    channels=32,
    num_classes=19,
    dropout_ratio=0,
    norm_cfg=dict(type='BN', requires_grad=True),
    num_convs=1,
    up_scale=4,
    kernel_size=1,
    align_corners=False)
model = dict(
    backbone=dict(embed_dims=384, num_heads=6),
    decode_head=dict(in_channels=384),
    auxiliary_head=[
        dict(head, in_index=i, loss_decode=dict(type='CrossEntropyLoss', loss_weight=0.4)) for i in range(3)
    ])
