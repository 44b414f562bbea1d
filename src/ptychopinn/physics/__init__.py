"""Physics of ptychography: FFT conventions, patch extraction/placement, probe, forward model,
overlap constraint and likelihoods. Import the submodules directly (they import torch)."""
