# SETR-MLA at the tiny size: ../../_base_/setr_vit-b16_mla.py at ViT-Ti's width, the neck and heads
# narrower (mla_channels 32, so the decoder's 4 x 32 = 128), the crop and BN of ./setr_tiny_naive.py.
_base_ = ['../../_base_/setr_vit-b16_mla.py']
norm_cfg = dict(type='BN', requires_grad=True)
model = dict(
    data_preprocessor=dict(size=(64, 64)),
    backbone=dict(img_size=(64, 64), embed_dims=192, num_heads=3),
    neck=dict(in_channels=[192, 192, 192, 192], out_channels=64, norm_cfg=norm_cfg),
    decode_head=dict(in_channels=(64, 64, 64, 64), channels=128, mla_channels=32, norm_cfg=norm_cfg),
    auxiliary_head=[dict(aux, in_channels=64, channels=64) for aux in _base_.model.auxiliary_head],
    test_cfg=dict(crop_size=(128, 128), stride=(96, 96)))  # as ./setr_tiny_naive.py
