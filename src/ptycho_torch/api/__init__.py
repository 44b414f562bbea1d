"""Object API of the PtychoPINN-Torch surface (see :mod:`ptycho_torch.api.base_api`)."""
