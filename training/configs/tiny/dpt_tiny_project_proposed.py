# Proposed: encrypted images and the owner's encrypted checkpoint, both from the bundle.
_base_ = ['./_base_/dpt_tiny_project.py', './_base_/cityscapes_20_warmup.py']
