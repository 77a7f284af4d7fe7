# Conventional 2: encrypted images from the bundle, the plain pretrained checkpoint (not the bundle's).
_base_ = ['./_base_/setr_vit-l16_mla.py', './_base_/cityscapes_80k.py']
model = dict(backbone=dict(init_cfg=dict(checkpoint='pretrain/vit-l16_384_plain.safetensors')))
custom_hooks = [dict(type='CipherSegCheckHook', data='encrypted', checkpoint='plain')]
