# Baseline: plain images and the plain checkpoint, from a bundle of unencrypted data.
_base_ = ['./_base_/segmenter_vit-b16_mask.py', './_base_/ade20k_160k.py']
custom_hooks = [dict(type='CipherSegCheckHook', data='plain', checkpoint='plain')]
train_dataloader = dict(batch_size=1)  # 8xb1, as mmseg trains Segmenter
