"""The HTTP feedback service."""
