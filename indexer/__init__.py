"""Moves vectors and documents into FAISS and the search stores (embedded SQLite or Elasticsearch)."""
