"""pyclink-sample: modules whose optimization levels differ in known ways."""

__version__ = "1.0"
