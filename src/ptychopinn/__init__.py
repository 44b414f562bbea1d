"""ptychopinn: physics-informed neural-network ptychography in PyTorch.

Importing this package is cheap: it loads no torch, Lightning, matplotlib or h5py.
Subpackages: ``config``, ``physics`` (the forward model, noise models, shifts), ``data``, ``io`` (every file
format), ``simulate``, ``models``, ``training``, ``inference`` (network prediction and stitching), ``refine``
(iterative refinement on the physics: object, probe and its modes, positions), ``metrics``, ``frc``, ``plots``,
``workflows`` (the commands as functions), ``cli``.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("ptychopinn")
except PackageNotFoundError:  # running from a source tree without install
    __version__ = "0+unknown"

__all__ = ["__version__"]
