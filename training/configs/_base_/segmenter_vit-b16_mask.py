# Segmenter with the mask transformer decoder on ViT-B/16 (mmseg 1.2.2's segmenter_vit-b16_mask.py and
# segmenter_vit-b_mask_8xb1-160k_ade20k-512x512.py) for Cityscapes: the last layer's tokens after the
# final norm, stochastic depth 0.1, SGD lr 0.001 without weight decay or head multiplier, batch 1 on 8
# GPUs; Cityscapes' 19 classes, 768x768 crops, 80k iterations and slide inference 768/512.
_base_ = ['./vit-b16.py']
model = dict(
    backbone=dict(out_indices=-1, final_norm=True, drop_path_rate=0.1),
    decode_head=dict(
        type='SegmenterMaskTransformerHead',
        in_channels=768,
        channels=768,
        num_classes=19,
        num_layers=2,
        num_heads=12,
        embed_dims=768,
        dropout_ratio=0.0,
        loss_decode=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0)))
optim_wrapper = dict(
    _delete_=True, type='OptimWrapper', optimizer=dict(type='SGD', lr=0.001, momentum=0.9, weight_decay=0.0))
