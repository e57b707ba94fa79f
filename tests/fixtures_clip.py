"""Fixtures: clip."""
