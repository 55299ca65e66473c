"""DVC stage scripts: one module per stage, each run as ``python -m stages.<name>``."""
