"""Compatibility surface for users of the reference PyTorch backend (adapters over ``ptychopinn``)."""
