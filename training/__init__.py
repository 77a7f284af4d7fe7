"""Cloud side of cipherseg: mmsegmentation training and inference on an encrypted bundle. Never reads a key."""

from training import mmcv_compat

mmcv_compat.install()  # before anything imports mmseg: mmcv-lite has no compiled mmcv.ops
