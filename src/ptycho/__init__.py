"""Compatibility surface for ptychodus and users of the reference ``ptycho`` package (adapters over ``ptychopinn``)."""
