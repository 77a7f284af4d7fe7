"""Data-owner side of cipherseg: keys, image and model encryption, the encrypted bundle."""
