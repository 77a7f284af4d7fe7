"""System checks at sizes the test suite cannot afford, playing both roles through the command lines.

- ``python -m checks.full_size`` (``make check-full-size``): the paper's ViT-B/16 MLA config at full
  size on a CPU, proposed against baseline;
- ``bash checks/gpu.sh`` (``python -m checks.gpu``): ViT-L/16 MLA at the paper's settings on a CUDA
  machine, with its set-up, written up under ``docs/``.
"""
