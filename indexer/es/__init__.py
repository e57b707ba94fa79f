"""Elasticsearch backend: versioned mappings, zero-downtime reindex, hybrid search."""
