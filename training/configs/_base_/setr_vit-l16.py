# SETR's ViT-L/16 encoder (384 pretraining) as mmseg configures it for Cityscapes, reading the bundle's
# checkpoint, and SETR's optimizer: SGD, heads at 10x lr. The model of a config; its data and schedule
# come from ./cityscapes_80k.py.
norm_cfg = dict(type='SyncBN', requires_grad=True)  # plain BN when not distributed (mmengine)
model = dict(
    type='EncoderDecoder',
    # One mean and std for every channel: the augreg ViTs' own (timm: 0.5, 0.5 on the 0-1 scale), and
    # the cloud normalization the owner's fold targets (pipeline/weights.py, the checkpoint's norm_mean
    # and norm_std, checked by CipherSegCheckHook). Uniform, the fold is a signed permutation of the
    # patch embedding, to which SGD is equivariant; mmseg's per-channel ImageNet values would make
    # training on encrypted images drift from the plain trajectory. RGB: the store holds RGB.
    data_preprocessor=dict(
        type='SegDataPreProcessor',
        mean=[127.5, 127.5, 127.5],
        std=[127.5, 127.5, 127.5],
        bgr_to_rgb=False,
        pad_val=0,
        seg_pad_val=255,
        size=(768, 768)),
    backbone=dict(
        type='VisionTransformer',
        img_size=(768, 768),
        patch_size=16,
        in_channels=3,
        embed_dims=1024,
        num_layers=24,
        num_heads=16,
        out_indices=(9, 14, 19, 23),
        drop_rate=0.,
        norm_cfg=dict(type='LN', eps=1e-6, requires_grad=True),
        with_cls_token=True,
        interpolate_mode='bilinear',
        # mmseg's default (False) drops the patch embedding's bias, which the owner's fold needs.
        patch_bias=True,
        init_cfg=dict(type='Pretrained', checkpoint='{bundle}/backbone.safetensors')),
    train_cfg=dict(),
    test_cfg=dict(mode='slide', crop_size=(768, 768), stride=(512, 512)))
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='SGD', lr=0.01, momentum=0.9, weight_decay=0.0),
    clip_grad=None,
    paramwise_cfg=dict(custom_keys={'head': dict(lr_mult=10.)}))
