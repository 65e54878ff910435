"""Take a torchvision ResNet from PyTorch to production: export, quantize, build engines, benchmark."""

__version__ = "0.1.0"
