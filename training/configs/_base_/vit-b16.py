# The ViT-B/16 encoder of the segmentors beyond SETR (Segmenter, UperNet-ViT, DPT): SETR's encoder
# reading the bundle (uniform normalization, RGB, patch bias, slide inference 768/512 for Cityscapes)
# at ViT-B/16's width and depth, resampling position embeddings bicubically as mmseg's configs of
# these segmentors do.
_base_ = ['./setr_vit-l16.py']
model = dict(
    backbone=dict(embed_dims=768, num_layers=12, num_heads=12, out_indices=(2, 5, 8, 11), interpolate_mode='bicubic'))
