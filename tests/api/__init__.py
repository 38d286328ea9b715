"""API tests: each against a live server on SQLite or PostgreSQL (TENANTRY_TEST_DB)."""
