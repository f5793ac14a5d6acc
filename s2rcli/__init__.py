"""s2r: turn simulator data into realistic training data for driving perception."""

__version__ = "0.1.0"
