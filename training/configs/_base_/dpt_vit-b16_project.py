# DPT on ViT-B/16 (mmseg 1.2.2's dpt_vit-b16.py and dpt_vit-b16_8xb2-160k_ade20k-512x512.py) for
# Cityscapes: layers 2, 5, 8 and 11 with the class token, which the head projects into every token
# (readout 'project'), reassembled into a pyramid and fused.
_base_ = ['./vit-b16_adamw.py']
model = dict(
    backbone=dict(output_cls_token=True),
    decode_head=dict(
        type='DPTHead',
        in_channels=(768, 768, 768, 768),
        channels=256,
        embed_dims=768,
        post_process_channels=[96, 192, 384, 768],
        num_classes=19,
        readout_type='project',
        input_transform='multiple_select',
        in_index=(0, 1, 2, 3),
        norm_cfg=dict(type='SyncBN', requires_grad=True),
        loss_decode=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0)))
