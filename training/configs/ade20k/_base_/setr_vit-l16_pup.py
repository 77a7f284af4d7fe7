# SETR-PUP on ViT-L/16 at ADE20K's settings (setr_vit-l_pup_8xb2-160k_ade20k-512x512.py): ./setr_vit-l16_naive.py
# with PUP's upsampling (as ../../_base_/setr_vit-l16_pup.py) and lr 0.001.
_base_ = ['./setr_vit-l16_naive.py']
model = dict(
    decode_head=dict(num_convs=4, up_scale=2, kernel_size=3),
    auxiliary_head=[dict(aux, num_convs=2, kernel_size=3) for aux in _base_.model.auxiliary_head])
optim_wrapper = dict(optimizer=dict(lr=0.001))
