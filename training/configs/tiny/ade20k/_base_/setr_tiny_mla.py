# SETR-MLA at the tiny size (../../_base_/setr_tiny_mla.py) for ADE20K's 150 classes.
_base_ = ['../../_base_/setr_tiny_mla.py']
model = dict(
    decode_head=dict(num_classes=150),
    auxiliary_head=[dict(aux, num_classes=150) for aux in _base_.model.auxiliary_head])
