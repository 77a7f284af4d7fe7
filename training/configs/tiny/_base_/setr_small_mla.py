# SETR-MLA on ViT-S/16: ./setr_tiny_mla.py at ViT-S's width and heads.
_base_ = ['./setr_tiny_mla.py']
model = dict(backbone=dict(embed_dims=384, num_heads=6), neck=dict(in_channels=[384, 384, 384, 384]))
