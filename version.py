"""Herald's version: what `--version` prints, heartbeats record and metrics report."""

__version__ = "3.0.1"
