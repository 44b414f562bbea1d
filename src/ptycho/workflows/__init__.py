"""Reference-named workflows (``ptycho.workflows.components``): train, load a model bundle, save outputs."""
