# Segmenter at the tiny size (../../_base_/segmenter_tiny_mask.py) for ADE20K's 150 classes.
_base_ = ['../../_base_/segmenter_tiny_mask.py']
model = dict(decode_head=dict(num_classes=150))
