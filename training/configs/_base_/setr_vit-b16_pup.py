# SETR-PUP on ViT-B/16: the ViT-L/16 configuration with ViT-B's width and depth.
_base_ = ['./setr_vit-l16_pup.py']
head = dict(
    type='SETRUPHead',
    in_channels=768,
    channels=256,
    num_classes=19,
    dropout_ratio=0,
    norm_cfg=dict(type='SyncBN', requires_grad=True),
    kernel_size=3,
    align_corners=False)
model = dict(
    backbone=dict(embed_dims=768, num_layers=12, num_heads=12, out_indices=(2, 5, 8, 11)),
    decode_head=dict(in_channels=768),
    auxiliary_head=[
        dict(head, in_index=i, num_convs=2, up_scale=4, loss_decode=dict(type='CrossEntropyLoss', loss_weight=0.4))
        for i in range(3)
    ])
