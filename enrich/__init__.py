"""Enrichment stages (sentiment, ...)."""
