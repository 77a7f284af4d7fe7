# Baseline: plain images and the plain checkpoint, from a bundle of unencrypted data.
_base_ = ['./_base_/setr_small_pup.py', './_base_/cityscapes_20.py']
custom_hooks = [dict(type='CipherSegCheckHook', data='plain', checkpoint='plain')]
