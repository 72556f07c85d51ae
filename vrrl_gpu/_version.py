"""The package version, in one place (the CLI, exporters and report read it, not the root)."""

__version__ = "0.1.0"
