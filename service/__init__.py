"""The storefront HTTP service (FastAPI)."""
