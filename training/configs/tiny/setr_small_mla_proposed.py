# Proposed: encrypted images and the owner's encrypted checkpoint, both from the bundle.
_base_ = ['./_base_/setr_small_mla.py', './_base_/cityscapes_20.py']
