"""Aggregate: pure counting over the socket tables (no I/O): totals and owners, ports, listeners,
ephemeral-port use."""
