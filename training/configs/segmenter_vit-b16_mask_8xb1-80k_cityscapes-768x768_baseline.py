# Baseline: plain images and the plain checkpoint, from a bundle of unencrypted data.
_base_ = ['./_base_/segmenter_vit-b16_mask.py', './_base_/cityscapes_80k.py']
custom_hooks = [dict(type='CipherSegCheckHook', data='plain', checkpoint='plain')]
