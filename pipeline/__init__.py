"""Pipelines the CLI and the service run: ingest, train, tag, evaluate, reindex."""
