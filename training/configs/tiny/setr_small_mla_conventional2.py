# Conventional 2: encrypted images from the bundle, the plain pretrained checkpoint (not the bundle's).
_base_ = ['./_base_/setr_small_mla.py', './_base_/cityscapes_20.py']
model = dict(backbone=dict(init_cfg=dict(checkpoint='pretrain/vit_small_patch16_224_plain.safetensors')))
custom_hooks = [dict(type='CipherSegCheckHook', data='encrypted', checkpoint='plain')]
