# Conventional 2: encrypted images from the bundle, the plain pretrained checkpoint (not the bundle's).
_base_ = ['./_base_/dpt_tiny_project.py', './_base_/cityscapes_20_warmup.py']
model = dict(backbone=dict(init_cfg=dict(checkpoint='pretrain/vit_tiny_patch16_224_plain.safetensors')))
custom_hooks = [dict(type='CipherSegCheckHook', data='encrypted', checkpoint='plain')]
