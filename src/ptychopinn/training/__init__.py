"""ptychopinn.training."""
