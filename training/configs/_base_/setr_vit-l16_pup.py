# SETR-PUP on ViT-L/16 (mmseg 1.2.2, Cityscapes): SETR-Naive's heads with progressive upsampling, four
# 3x3 conv and 2x upsampling stages in the decoder, two with 4x in each auxiliary head.
_base_ = ['./setr_vit-l16_naive.py']
model = dict(
    decode_head=dict(num_convs=4, up_scale=2, kernel_size=3),
    auxiliary_head=[dict(aux, num_convs=2, kernel_size=3) for aux in _base_.model.auxiliary_head])
