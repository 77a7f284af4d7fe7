# Segmenter on ViT-B/16 (../../_base_/segmenter_vit-b16_mask.py) at mmseg 1.2.2's ADE20K settings
# (segmenter_vit-b_mask_8xb1-160k_ade20k-512x512.py): 150 classes, 512x512 inputs, slide inference over
# 512x512 windows with stride 480.
_base_ = ['../../_base_/segmenter_vit-b16_mask.py']
model = dict(
    data_preprocessor=dict(size=(512, 512)),
    backbone=dict(img_size=(512, 512)),
    decode_head=dict(num_classes=150),
    test_cfg=dict(crop_size=(512, 512), stride=(480, 480)))
