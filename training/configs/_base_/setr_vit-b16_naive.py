# SETR-Naive on ViT-B/16: the ViT-L/16 configuration with ViT-B's width and depth.
_base_ = ['./setr_vit-l16_naive.py']
model = dict(
    backbone=dict(embed_dims=768, num_layers=12, num_heads=12, out_indices=(2, 5, 8, 11)),
    decode_head=dict(in_channels=768),
    auxiliary_head=[dict(aux, in_channels=768) for aux in _base_.model.auxiliary_head])
