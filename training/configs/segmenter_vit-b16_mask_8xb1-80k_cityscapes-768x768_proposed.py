# Proposed: encrypted images and the owner's encrypted checkpoint, both from the bundle.
_base_ = ['./_base_/segmenter_vit-b16_mask.py', './_base_/cityscapes_80k.py']
