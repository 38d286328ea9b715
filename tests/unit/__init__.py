"""In-process tests: the core, models, services and policies without a live server (some on a database)."""
