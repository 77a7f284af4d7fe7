# Conventional 1: not trained in the cloud. The owner fine-tunes the baseline on plain images and
# encrypts its patch embedding (pipeline.weights); training.test runs it on the encrypted bundle.
_base_ = ['./upernet_tiny_mln_baseline.py']
