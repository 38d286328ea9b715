"""The tenant's plan and custom rate limits."""

STATEMENTS = [
    "ALTER TABLE tenant ADD COLUMN plan VARCHAR(20) NOT NULL DEFAULT 'standard'",
    "ALTER TABLE tenant ADD COLUMN rate_limits TEXT",
]
