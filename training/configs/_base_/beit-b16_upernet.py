# UperNet on BEiT-B/16 (mmseg 1.2.2's upernet_beit.py and beit-base_upernet_8xb2-160k_ade20k-640x640.py)
# for Cityscapes: UperNet-ViT's heads (768 channels, the auxiliary head on layer 7) on mmseg's BEiT,
# whose relative position bias acts on the tokens after the patch embedding, so the fold is as exact as
# for a ViT; a Feature2Pyramid neck; AdamW lr 3e-5, weight decay 0.05 and layer-wise lr decay 0.9 (a
# fixed factor per parameter, which the fold commutes with). BEiT's window is its input size: slide
# inference with 768x768 windows.
_base_ = ['./upernet_vit-b16_mln.py']
norm_cfg = dict(type='SyncBN', requires_grad=True)
model = dict(
    backbone=dict(
        _delete_=True,
        type='CipherSegBEiT',
        img_size=(768, 768),
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
    decode_head=dict(channels=768),
    auxiliary_head=dict(in_index=2))
optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=3e-5, betas=(0.9, 0.999), weight_decay=0.05),
    constructor='LayerDecayOptimizerConstructor',
    paramwise_cfg=dict(num_layers=12, layer_decay_rate=0.9))
