"""ptychopinn.io: file formats.

Submodules (import them explicitly; this package imports nothing so that it stays cheap):

* ``ptychopinn.io.registry``: the registered formats and :func:`~ptychopinn.io.registry.load_scan`, the one
  reader of scans (format picked from the file's content), plus ``load_probe``, ``load_object`` and
  ``describe_file``.
* ``ptychopinn.io.schema``: the scan keys -> :class:`ptychopinn.data.ScanData` mapping and its checks.
* ``ptychopinn.io.npz``, ``ptychopinn.io.hdf5``, ``ptychopinn.io.cxi``, ``ptychopinn.io.tike``: the scan formats
  (the first two also with the diffraction stack memory-mapped: ``open_npz_mmap``, ``open_h5_scan``).
* ``ptychopinn.io.frames``: crop window, zero order and mirrored positions, the same for every scan format.
* ``ptychopinn.io.reconstruction``: reconstruction NPZ files; ``ptychopinn.io.product_h5``: ptychodus products.
* ``ptychopinn.io.probe``: probe estimate from the data.
* ``ptychopinn.io.files``: regular-file, container and memory-limit checks; ``ptychopinn.io.atomic``: atomic
  writes; ``ptychopinn.io.outputs``: output folders (outputs apart from inputs, one run per folder, outputs
  only on success); ``ptychopinn.io.units``: amplitude/intensity detection and conversion.
* ``ptychopinn.io.h5guard``: the one gate of every HDF5 reader (links, external storage, virtual datasets,
  filters, declared sizes, text); ``ptychopinn.io.h5decode``: compressed chunks decoded in a child process.
"""
