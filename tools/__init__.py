"""Developer tools that are not pipeline stages (e.g. `python -m tools.report`)."""
