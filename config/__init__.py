"""The journey map and run settings: data files plus the one validated model (``config.model``)."""
