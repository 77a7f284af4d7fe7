# SETR-Naive on ViT-Ti/16 (timm's vit_tiny_patch16_224: 192 wide, 12 layers, 3 heads; uniform 127.5
# normalization like the paper's ViTs): ../../_base_/setr_vit-b16_naive.py at ViT-Ti's width, narrower
# heads, the 64x64 crop of ./cityscapes_20.py, and plain BN (SyncBN needs CUDA, also in a CPU
# distributed run).
_base_ = ['../../_base_/setr_vit-b16_naive.py']
norm_cfg = dict(type='BN', requires_grad=True)
model = dict(
    data_preprocessor=dict(size=(64, 64)),
    backbone=dict(img_size=(64, 64), embed_dims=192, num_heads=3),
    decode_head=dict(in_channels=192, channels=32, norm_cfg=norm_cfg),
    auxiliary_head=[dict(aux, in_channels=192, channels=32, norm_cfg=norm_cfg) for aux in _base_.model.auxiliary_head],
    # Windows of twice the crop (the position embedding interpolated 2x), overlapping by 32 px (stride: whole
    # blocks) so that maps show no seams at window edges: a 512x1024 image in 55 passes (benchmarks/bench_eval.py);
    # the crop with stride 32 took 465 passes, 14-18 s. On the small-scale Table I baseline, 128x128 windows
    # scored mIoU 47.3 against the crop's 45.9; whole images or 256x256 windows lost 6 points.
    test_cfg=dict(crop_size=(128, 128), stride=(96, 96)))
