"""Cloud side of cipherseg: mmsegmentation training and inference on an encrypted bundle. Never reads a key.

Importing this package does nothing; :func:`training.plugin.register` prepares mmseg (our entry points
call it, and the configs' ``custom_imports`` import it for mmseg's own tools).
"""
