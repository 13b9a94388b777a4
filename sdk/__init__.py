"""Shoal's Python client. It talks HTTP to a Shoal server and imports neither lake nor api."""

__all__: list[str] = []
