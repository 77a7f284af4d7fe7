# The tiny runtime with warm-up (../../_base_/cityscapes_20_warmup.py) for an ADE20K bundle.
_base_ = ['../../_base_/cityscapes_20_warmup.py']
