# ./cityscapes_80k.py with mmseg 1.2.2's schedule for UperNet-ViT and DPT on ViT-B/16 (the AdamW
# segmentors: vit_vit-b16_mln_upernet_8xb2-80k, dpt_vit-b16_8xb2-160k): linear warm-up over 1500
# iterations, then linear decay to 0 at 80k; batch 2 on 8 GPUs.
_base_ = ['./cityscapes_80k.py']
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-6, by_epoch=False, begin=0, end=1500),
    dict(type='PolyLR', eta_min=0.0, power=1.0, begin=1500, end=80000, by_epoch=False),
]
train_dataloader = dict(batch_size=2)
