# SETR-PUP on ViT-L/16: four 2x upsampling stages, three auxiliary heads (mmseg 1.2.2, Cityscapes).
_base_ = ['./setr_vit-l16.py']
norm_cfg = dict(type='SyncBN', requires_grad=True)
head = dict(
    type='SETRUPHead',
    in_channels=1024,
    channels=256,
    num_classes=19,
    dropout_ratio=0,
    norm_cfg=norm_cfg,
    kernel_size=3,
    align_corners=False)
model = dict(
    decode_head=dict(
        head, in_index=3, num_convs=4, up_scale=2, loss_decode=dict(type='CrossEntropyLoss', loss_weight=1.0)),
    auxiliary_head=[
        dict(head, in_index=i, num_convs=2, up_scale=4, loss_decode=dict(type='CrossEntropyLoss', loss_weight=0.4))
        for i in range(3)
    ])
