"""Fixtures: search."""
