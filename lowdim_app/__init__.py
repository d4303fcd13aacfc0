"""LowDim Lab: the low-dimensional structure of diffusion models, made usable."""
__version__ = "0.1.0"
