# Baseline: plain images and the plain checkpoint, from a bundle of unencrypted data.
_base_ = ['./_base_/setr_vit-b16_pup.py', './_base_/cityscapes_80k.py']
custom_hooks = [dict(type='CipherSegCheckHook', data='plain', checkpoint='plain')]
