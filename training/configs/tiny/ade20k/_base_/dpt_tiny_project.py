# DPT at the tiny size (../../_base_/dpt_tiny_project.py) for ADE20K's 150 classes.
_base_ = ['../../_base_/dpt_tiny_project.py']
model = dict(decode_head=dict(num_classes=150))
