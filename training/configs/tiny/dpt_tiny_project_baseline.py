# Baseline: plain images and the plain checkpoint, from a bundle of unencrypted data.
_base_ = ['./_base_/dpt_tiny_project.py', './_base_/cityscapes_20_warmup.py']
custom_hooks = [dict(type='CipherSegCheckHook', data='plain', checkpoint='plain')]
