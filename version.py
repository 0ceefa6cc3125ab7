"""Herald's version: what `--version` prints, heartbeats record and metrics report."""

__version__ = "2.0.0"
