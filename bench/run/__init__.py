"""Running cells: the resolution of a suite, the one cell lifecycle, the runner and its executors."""
