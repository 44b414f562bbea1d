"""ptychopinn.inference."""
