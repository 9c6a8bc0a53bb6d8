"""Method adapters, one file each; registered lazily through :mod:`bench.sdk.registry`."""
