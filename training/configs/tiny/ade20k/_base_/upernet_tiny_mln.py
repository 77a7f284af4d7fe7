# UperNet-ViT at the tiny size (../../_base_/upernet_tiny_mln.py) for ADE20K's 150 classes.
_base_ = ['../../_base_/upernet_tiny_mln.py']
model = dict(decode_head=dict(num_classes=150), auxiliary_head=dict(num_classes=150))
