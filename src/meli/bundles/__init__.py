"""Model bundles."""
