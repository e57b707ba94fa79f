"""Versioned Elasticsearch index settings, mappings and search templates."""
