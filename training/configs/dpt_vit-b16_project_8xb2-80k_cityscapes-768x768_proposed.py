# Proposed: encrypted images and the owner's encrypted checkpoint, both from the bundle.
_base_ = ['./_base_/dpt_vit-b16_project.py', './_base_/cityscapes_80k_warmup.py']
