"""ptychopinn.data: the scan data type (numpy only).

Torch-based modules of this subpackage (grouping datasets, data modules) are imported explicitly,
e.g. ``from ptychopinn.data.dataset import ...``, so that importing ``ptychopinn.data`` stays cheap.
"""

from ptychopinn.data.scan import ScanData

__all__ = ["ScanData"]
