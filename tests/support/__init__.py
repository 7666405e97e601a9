"""Shared test helpers: corpus paths, a local replay HTTP server, quick Mention builders."""
