"""Compatibility surface for users of the reference PyTorch backend (adapters over ``ptychopinn``)."""

from ptychopinn.runtime import prepare_cpu_runtime

# Before any submodule loads torch (ptychodus may import this package in a fresh subprocess).
prepare_cpu_runtime()
