"""Command-line tools that are not part of training (e.g. checkpoint conversion)."""
