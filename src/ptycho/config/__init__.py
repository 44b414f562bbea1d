"""Reference-named configuration (``ptycho.config.config``); importing it is cheap (no torch)."""
