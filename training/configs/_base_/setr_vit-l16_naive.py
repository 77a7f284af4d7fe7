# SETR-Naive on ViT-L/16: 1x1 conv and 4x bilinear upsampling, three auxiliary heads (mmseg 1.2.2).
_base_ = ['./setr_vit-l16.py']
norm_cfg = dict(type='SyncBN', requires_grad=True)
head = dict(
    type='SETRUPHead',
    in_channels=1024,
    channels=256,
    num_classes=19,
    dropout_ratio=0,
    norm_cfg=norm_cfg,
    num_convs=1,
    up_scale=4,
    kernel_size=1,
    align_corners=False)
model = dict(
    decode_head=dict(head, in_index=3, loss_decode=dict(type='CrossEntropyLoss', loss_weight=1.0)),
    auxiliary_head=[
        dict(head, in_index=i, loss_decode=dict(type='CrossEntropyLoss', loss_weight=0.4)) for i in range(3)
    ])
