# UperNet-ViT at the tiny size: ../../_base_/upernet_vit-b16_mln.py at ViT-Ti's width, narrower heads, the
# crop, inference windows and BN of ./setr_tiny_naive.py.
_base_ = ['../../_base_/upernet_vit-b16_mln.py']
norm_cfg = dict(type='BN', requires_grad=True)
model = dict(
    data_preprocessor=dict(size=(64, 64)),
    backbone=dict(img_size=(64, 64), embed_dims=192, num_heads=3),
    neck=dict(in_channels=[192, 192, 192, 192], out_channels=192),
    decode_head=dict(in_channels=[192, 192, 192, 192], channels=64, norm_cfg=norm_cfg),
    auxiliary_head=dict(in_channels=192, channels=32, norm_cfg=norm_cfg),
    test_cfg=dict(crop_size=(128, 128), stride=(96, 96)))
