"""Customer-voice listener: social listening and community knowledge, self-hosted."""
__version__ = "0.1.0"
