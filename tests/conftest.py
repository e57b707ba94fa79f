"""Test fixtures live in one plugin module per area (tests/fixtures_*.py), so areas never edit each other's."""

pytest_plugins = ["fixtures_data", "fixtures_catalog", "fixtures_models", "fixtures_search", "fixtures_clip",
                  "fixtures_review", "fixtures_behaviour"]
