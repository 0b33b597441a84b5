"""The record type every floor above shares: socket tables, kinds, stages, tags."""
