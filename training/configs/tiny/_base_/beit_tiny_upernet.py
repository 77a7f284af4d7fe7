# UperNet on BEiT at the tiny size of ./setr_tiny_naive.py (64x64 crops, 20 iterations):
# ../../_base_/beit-b16_upernet.py with narrower heads. timm has no BEiT smaller than BEiT-B/16, so the
# backbone keeps its size; its window is the 64x64 crop (4x4 tokens), and inference slides 64x64
# windows, since BEiT reads inputs of its window's size only.
_base_ = ['./upernet_tiny_mln.py']
crop_size = (64, 64)
norm_cfg = dict(type='BN', requires_grad=True)
model = dict(
    backbone=dict(
        _delete_=True,
        type='CipherSegBEiT',
        img_size=crop_size,
        patch_size=16,
        in_channels=3,
        embed_dims=768,
        num_layers=12,
        num_heads=12,
        mlp_ratio=4,
        out_indices=(3, 5, 7, 11),
        qv_bias=True,
        attn_drop_rate=0.0,
        drop_path_rate=0.1,
        norm_cfg=dict(type='LN', eps=1e-6),
        act_cfg=dict(type='GELU'),
        norm_eval=False,
        init_values=0.1,
        init_cfg=dict(type='Pretrained', checkpoint='{bundle}/backbone.safetensors')),
    neck=dict(_delete_=True, type='Feature2Pyramid', embed_dim=768, rescales=[4, 2, 1, 0.5], norm_cfg=norm_cfg),
    decode_head=dict(in_channels=[768, 768, 768, 768]),
    auxiliary_head=dict(in_channels=768, in_index=2),
    # BEiT reads inputs of its window's size only: the crop's windows, overlapping by one block (no seams).
    test_cfg=dict(mode='slide', crop_size=crop_size, stride=(48, 48)))
optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=3e-5, betas=(0.9, 0.999), weight_decay=0.05),
    constructor='LayerDecayOptimizerConstructor',
    paramwise_cfg=dict(num_layers=12, layer_decay_rate=0.9))
