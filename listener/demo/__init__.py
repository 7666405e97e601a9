"""The offline demo: authored feeds about a fictitious product, replayed from a local server."""
