# Baseline: plain images and the plain checkpoint, from a bundle of unencrypted data.
_base_ = ['./_base_/beit-b16_upernet.py', './_base_/cityscapes_80k_warmup.py']
custom_hooks = [dict(type='CipherSegCheckHook', data='plain', checkpoint='plain')]
