# SETR-Naive on ViT-S/16 (../../_base_/setr_small_naive.py) for ADE20K's 150 classes.
_base_ = ['../../_base_/setr_small_naive.py']
model = dict(
    decode_head=dict(num_classes=150),
    auxiliary_head=[dict(aux, num_classes=150) for aux in _base_.model.auxiliary_head])
