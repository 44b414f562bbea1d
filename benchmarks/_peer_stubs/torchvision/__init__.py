"""Benchmark-only stand-in for ``torchvision`` (see ../README.md); not the real package.

Provides only ``torchvision.transforms.GaussianBlur``, the one name pty-chi imports.
"""

__version__ = "0.0+ptychopinn.stub"
STUB = True
