# UperNet on BEiT-B/16 (../../_base_/beit-b16_upernet.py) at mmseg 1.2.2's ADE20K settings
# (beit-base_upernet_8xb2-160k_ade20k-640x640.py): 150 classes, 640x640 inputs (BEiT's window), slide
# inference over 640x640 windows with stride 416 (mmseg's 426, made a multiple of the block size).
_base_ = ['../../_base_/beit-b16_upernet.py']
model = dict(
    data_preprocessor=dict(size=(640, 640)),
    backbone=dict(img_size=(640, 640)),
    decode_head=dict(num_classes=150),
    auxiliary_head=dict(num_classes=150),
    test_cfg=dict(crop_size=(640, 640), stride=(416, 416)))
