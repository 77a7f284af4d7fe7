# Proposed: encrypted images and the owner's encrypted checkpoint, both from the bundle.
_base_ = ['./_base_/setr_vit-b16_naive.py', './_base_/cityscapes_80k.py']
