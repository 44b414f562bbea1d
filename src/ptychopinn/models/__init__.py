"""Generators (looked up by name in a registry) and the PINN module (generator + physics).

Importing this package imports torch and registers the built-in generators (``'cnn'``, ``'unet'``).
"""

from ptychopinn.models import cnn as cnn  # noqa: F401 - the import registers the 'cnn' generator
from ptychopinn.models import unet as unet  # noqa: F401 - the import registers the 'unet' generator
from ptychopinn.models.cnn import CNNGenerator, count_parameters, forward_flops
from ptychopinn.models.pinn import PtychoPINN
from ptychopinn.models.registry import available_generators, build_generator, register_generator

__all__ = ["CNNGenerator", "PtychoPINN", "available_generators", "build_generator", "count_parameters",
           "forward_flops", "register_generator"]
