# SETR-MLA on ViT-B/16: the ViT-L/16 configuration with ViT-B's width and depth.
_base_ = ['./setr_vit-l16_mla.py']
model = dict(
    backbone=dict(embed_dims=768, num_layers=12, num_heads=12, out_indices=(2, 5, 8, 11)),
    neck=dict(in_channels=[768, 768, 768, 768]))
