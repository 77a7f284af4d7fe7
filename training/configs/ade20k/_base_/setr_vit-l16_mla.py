# SETR-MLA on ViT-L/16 (../../_base_/setr_vit-l16_mla.py) at mmseg 1.2.2's ADE20K settings
# (setr_vit-l_mla_8xb2-160k_ade20k-512x512.py): 150 classes, 512x512 inputs, lr 0.001, slide inference over 512x512 windows with stride 336 (mmseg's 341, made a multiple of the block size:
# a window of an encrypted image must start on a block).
_base_ = ['../../_base_/setr_vit-l16_mla.py']
model = dict(
    data_preprocessor=dict(size=(512, 512)),
    backbone=dict(img_size=(512, 512)),
    decode_head=dict(num_classes=150),
    auxiliary_head=[dict(aux, num_classes=150) for aux in _base_.model.auxiliary_head],
    test_cfg=dict(crop_size=(512, 512), stride=(336, 336)))
optim_wrapper = dict(optimizer=dict(lr=0.001))
