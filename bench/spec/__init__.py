"""What a suite says: YAML parsing, strict config coercion, the cell grid and run identity."""
