"""Training-only code for the sentiment model (needs the [train] extra: torch, transformers)."""
