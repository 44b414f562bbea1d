"""ptychopinn.io: file formats.

Submodules (import them explicitly; this package imports nothing so that it stays cheap):

* ``ptychopinn.io.units``: amplitude/intensity detection and conversion of diffraction patterns.
* ``ptychopinn.io.npz``: the PtychoPINN NPZ scan contract <-> :class:`ptychopinn.data.ScanData`.
* ``ptychopinn.io.product_h5``: ptychodus product HDF5 files (object, probe, positions in metres).
"""
