"""ptychopinn.data: the scan data type (numpy only).

The other modules (``grouping``: neighbour groups of scan points; ``normalize``: the input and photon
scales) are imported explicitly, e.g. ``from ptychopinn.data.grouping import group_positions``; the
torch datasets and the Lightning data module live in :mod:`ptychopinn.training.data`.
"""

from ptychopinn.data.scan import ScanData

__all__ = ["ScanData"]
