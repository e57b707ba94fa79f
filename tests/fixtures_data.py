"""Fixtures: data."""
