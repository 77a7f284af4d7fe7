# Conventional 1: not trained in the cloud. The owner fine-tunes the baseline on plain images and
# encrypts its patch embedding (pipeline.weights); training.test runs it on the encrypted bundle.
_base_ = ['./setr_vit-l16_naive_8xb2-160k_ade20k-512x512_baseline.py']
