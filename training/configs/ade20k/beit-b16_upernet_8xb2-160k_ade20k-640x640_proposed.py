# Proposed: encrypted images and the owner's encrypted checkpoint, both from the bundle.
_base_ = ['./_base_/beit-b16_upernet.py', './_base_/ade20k_640x640_160k_warmup.py']
