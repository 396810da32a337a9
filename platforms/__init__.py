"""Data sources: one class per file; the file name is the platform id."""
