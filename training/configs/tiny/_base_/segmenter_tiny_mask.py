# Segmenter at the tiny size: ../../_base_/segmenter_vit-b16_mask.py at mmseg's ViT-T widths
# (segmenter_vit-t: 192, 3 heads), with the crop and inference windows of ./setr_tiny_naive.py.
_base_ = ['../../_base_/segmenter_vit-b16_mask.py']
model = dict(
    data_preprocessor=dict(size=(64, 64)),
    backbone=dict(img_size=(64, 64), embed_dims=192, num_heads=3),
    decode_head=dict(in_channels=192, channels=192, num_heads=3, embed_dims=192),
    auxiliary_head=None,
    test_cfg=dict(crop_size=(128, 128), stride=(96, 96)))
