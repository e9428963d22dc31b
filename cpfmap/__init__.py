"""cpfmap: a declarative connector engine for the Parallels RAS Custom Provider Framework."""

__version__ = "0.1.0"
