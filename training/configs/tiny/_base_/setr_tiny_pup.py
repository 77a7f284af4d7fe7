# SETR-PUP at the tiny size of ./setr_tiny_naive.py: four 2x upsampling stages, three auxiliary heads.
_base_ = ['./setr_tiny_naive.py']
head = dict(
    type='SETRUPHead',
    in_channels=192,
    channels=32,
    num_classes=19,
    dropout_ratio=0,
    norm_cfg=dict(type='BN', requires_grad=True),
    kernel_size=3,
    align_corners=False)
model = dict(
    decode_head=dict(num_convs=4, up_scale=2, kernel_size=3),
    auxiliary_head=[
        dict(head, in_index=i, num_convs=2, up_scale=4, loss_decode=dict(type='CrossEntropyLoss', loss_weight=0.4))
        for i in range(3)
    ])
