# The tiny runtime (../../_base_/cityscapes_20.py: 64x64 crops, 20 iterations on a CPU) for an ADE20K
# bundle: nothing in it depends on the dataset, whose classes and palette come from the bundle.
_base_ = ['../../_base_/cityscapes_20.py']
