# DPT on ViT-B/16 (../../_base_/dpt_vit-b16_project.py) at mmseg 1.2.2's ADE20K settings
# (dpt_vit-b16_8xb2-160k_ade20k-512x512.py): 150 classes, 512x512 inputs, whole-image inference.
_base_ = ['../../_base_/dpt_vit-b16_project.py']
model = dict(
    data_preprocessor=dict(size=(512, 512)),
    backbone=dict(img_size=(512, 512)),
    decode_head=dict(num_classes=150),
    test_cfg=dict(_delete_=True, mode='whole'))
