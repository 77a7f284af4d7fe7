# Conventional 1: not trained in the cloud. The owner fine-tunes the baseline on plain images and
# encrypts its patch embedding (pipeline.weights); training.test runs it on the encrypted bundle.
_base_ = ['./segmenter_vit-b16_mask_8xb1-160k_ade20k-512x512_baseline.py']
