"""ptychopinn.simulate."""
