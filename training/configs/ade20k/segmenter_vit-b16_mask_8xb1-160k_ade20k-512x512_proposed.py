# Proposed: encrypted images and the owner's encrypted checkpoint, both from the bundle.
_base_ = ['./_base_/segmenter_vit-b16_mask.py', './_base_/ade20k_160k.py']
train_dataloader = dict(batch_size=1)  # 8xb1, as mmseg trains Segmenter
