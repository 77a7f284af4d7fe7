# Proposed: encrypted images and the owner's encrypted checkpoint, both from the bundle.
_base_ = ['./_base_/beit-b16_upernet.py', './_base_/cityscapes_80k_warmup.py']
