"""Catalog ingestion: readers per file format, the one product record schema and its validation, the rejects file."""
