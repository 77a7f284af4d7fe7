# SETR-PUP on ViT-B/16: SETR-Naive on ViT-B/16 with PUP's upsampling (as ./setr_vit-l16_pup.py).
_base_ = ['./setr_vit-b16_naive.py']
model = dict(
    decode_head=dict(num_convs=4, up_scale=2, kernel_size=3),
    auxiliary_head=[dict(aux, num_convs=2, kernel_size=3) for aux in _base_.model.auxiliary_head])
