"""ptychopinn: physics-informed neural-network ptychography in PyTorch.

Importing this package is cheap: it loads no torch, Lightning, matplotlib or h5py.
Subpackages: ``config``, ``physics``, ``data``, ``io``, ``simulate``, ``models``, ``training``,
``inference``, ``metrics``, ``plots``, ``workflows``, ``cli``.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("ptychopinn")
except PackageNotFoundError:  # running from a source tree without install
    __version__ = "0+unknown"

__all__ = ["__version__"]
