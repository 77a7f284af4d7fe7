# SETR-Naive on ViT-S/16 (timm's vit_small_patch16_224: 384 wide, 12 layers, 6 heads): ./setr_tiny_naive.py
# (crops, heads, inference) at ViT-S's width and heads.
_base_ = ['./setr_tiny_naive.py']
model = dict(
    backbone=dict(embed_dims=384, num_heads=6),
    decode_head=dict(in_channels=384),
    auxiliary_head=[dict(aux, in_channels=384) for aux in _base_.model.auxiliary_head])
