"""The system of record: SQLite tables of products, tags, feedback, runs and rejects."""
