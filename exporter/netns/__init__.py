"""Network namespaces: find them, enter them, skip the empty tables, name their pods, read each one's tables."""
