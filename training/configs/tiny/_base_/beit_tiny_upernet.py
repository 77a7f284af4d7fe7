# UperNet on BEiT at the tiny size: ../../_base_/beit-b16_upernet.py with the heads of
# ./upernet_tiny_mln.py and its BN. timm has no BEiT smaller than BEiT-B/16, so the backbone keeps its
# size; its window is the 64x64 crop (4x4 tokens), and inference slides 64x64 windows, since BEiT reads
# inputs of its window's size only, overlapping by one block (no seams at window edges; 231 per 512x1024).
_base_ = ['../../_base_/beit-b16_upernet.py']
norm_cfg = dict(type='BN', requires_grad=True)
model = dict(
    data_preprocessor=dict(size=(64, 64)),
    backbone=dict(img_size=(64, 64)),
    neck=dict(norm_cfg=norm_cfg),
    decode_head=dict(channels=64, norm_cfg=norm_cfg),
    auxiliary_head=dict(channels=32, norm_cfg=norm_cfg),
    test_cfg=dict(crop_size=(64, 64), stride=(48, 48)))
