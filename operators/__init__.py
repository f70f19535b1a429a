"""Per-batch operators: validation, routing, Numba scoring and output records."""
