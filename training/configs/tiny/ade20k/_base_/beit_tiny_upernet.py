# UperNet on BEiT at the tiny size (../../_base_/beit_tiny_upernet.py) for ADE20K's 150 classes.
_base_ = ['../../_base_/beit_tiny_upernet.py']
model = dict(decode_head=dict(num_classes=150), auxiliary_head=dict(num_classes=150))
