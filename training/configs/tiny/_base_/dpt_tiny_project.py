# DPT at the tiny size of ./setr_tiny_naive.py: ../../_base_/dpt_vit-b16_project.py on ViT-Ti/16, its
# reassemble channels scaled by the width (192 / 768).
_base_ = ['./vit_tiny_adamw.py']
model = dict(
    backbone=dict(output_cls_token=True),
    decode_head=dict(
        _delete_=True,  # not a SETRUPHead: none of the naive head's settings apply
        type='DPTHead',
        in_channels=(192, 192, 192, 192),
        channels=64,
        embed_dims=192,
        post_process_channels=[24, 48, 96, 192],
        num_classes=19,
        readout_type='project',
        input_transform='multiple_select',
        in_index=(0, 1, 2, 3),
        norm_cfg=dict(type='BN', requires_grad=True),
        loss_decode=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0)),
    auxiliary_head=None)
