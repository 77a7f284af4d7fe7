# Proposed: encrypted images and the owner's encrypted checkpoint, both from the bundle.
_base_ = ['./_base_/upernet_tiny_mln.py', './_base_/cityscapes_20_warmup.py']
