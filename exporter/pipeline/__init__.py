"""The pipeline: one collection (read, own, count, the views), its single flight, the state a reload builds."""
