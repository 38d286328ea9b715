"""Versioned schema migrations, applied in order by `tenantry db upgrade` on SQLite and PostgreSQL.

Each module `mNNNN_<name>.py` has `STATEMENTS`: portable SQL run in one transaction, and may have
`after(db)`, a data step run in that same transaction. Never edit
an applied migration; add the next one.
"""
