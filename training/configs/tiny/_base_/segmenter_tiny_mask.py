# Segmenter at the tiny size of ./setr_tiny_naive.py (ViT-Ti/16, 64x64 crops, 20 iterations):
# ../../_base_/segmenter_vit-b16_mask.py at mmseg's ViT-T widths (segmenter_vit-t: 192, 3 heads).
# Inference as the SETR tiny base: 128x128 windows without overlap.
_base_ = ['./setr_tiny_naive.py']
model = dict(
    backbone=dict(out_indices=-1, final_norm=True, drop_path_rate=0.1, interpolate_mode='bicubic'),
    decode_head=dict(
        _delete_=True,  # not a SETRUPHead: none of the naive head's settings apply
        type='SegmenterMaskTransformerHead',
        in_channels=192,
        channels=192,
        num_classes=19,
        num_layers=2,
        num_heads=3,
        embed_dims=192,
        dropout_ratio=0.0,
        loss_decode=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0)),
    auxiliary_head=None)
optim_wrapper = dict(
    _delete_=True, type='OptimWrapper', optimizer=dict(type='SGD', lr=0.001, momentum=0.9, weight_decay=0.0))
