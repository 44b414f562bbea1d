"""Reference-named workflows of the PyTorch backend (see :mod:`ptycho_torch.workflows.components`)."""
