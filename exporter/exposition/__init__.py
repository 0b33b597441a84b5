"""Exposition: the only code that knows Prometheus; client_python collectors yielding families at
scrape time from one collection."""
