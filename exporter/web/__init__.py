"""Web: the scrape endpoint on asyncio (transport, connection, server), HTTP parsing, TLS and basic
auth (exporter-toolkit's web config)."""
