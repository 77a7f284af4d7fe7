# DPT at the tiny size: ../../_base_/dpt_vit-b16_project.py at ViT-Ti's width, its reassemble channels
# scaled by the width (192 / 768), with the crop, inference windows and BN of ./setr_tiny_naive.py.
_base_ = ['../../_base_/dpt_vit-b16_project.py']
model = dict(
    data_preprocessor=dict(size=(64, 64)),
    backbone=dict(img_size=(64, 64), embed_dims=192, num_heads=3),
    decode_head=dict(
        in_channels=(192, 192, 192, 192),
        channels=64,
        embed_dims=192,
        post_process_channels=[24, 48, 96, 192],
        norm_cfg=dict(type='BN', requires_grad=True)),
    auxiliary_head=None,
    test_cfg=dict(crop_size=(128, 128), stride=(96, 96)))
