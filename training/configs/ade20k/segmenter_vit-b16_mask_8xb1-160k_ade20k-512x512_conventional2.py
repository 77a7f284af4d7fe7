# Conventional 2: encrypted images from the bundle, the plain pretrained checkpoint (not the bundle's).
_base_ = ['./_base_/segmenter_vit-b16_mask.py', './_base_/ade20k_160k.py']
model = dict(backbone=dict(init_cfg=dict(checkpoint='pretrain/vit-b16_384_plain.safetensors')))
custom_hooks = [dict(type='CipherSegCheckHook', data='encrypted', checkpoint='plain')]
train_dataloader = dict(batch_size=1)  # 8xb1, as mmseg trains Segmenter
