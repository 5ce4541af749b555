"""What holds PostgreSQL's VACUUM back from removing a dead row version: the oldest of these
transaction ids. An erasure that must leave no old value on disk (the data-key table, the read
models) vacuums again until none is older than its change."""

VACUUM_HORIZONS = """
SELECT horizon FROM pg_stat_activity,
    LATERAL (VALUES (backend_xmin), (backend_xid)) AS h(horizon)
    WHERE (datname = current_database() OR backend_type = 'walsender')
    AND pid <> pg_backend_pid() AND horizon IS NOT NULL
    AND backend_type <> 'autovacuum worker'
UNION ALL SELECT xmin FROM pg_replication_slots WHERE xmin IS NOT NULL
UNION ALL SELECT transaction FROM pg_prepared_xacts WHERE database = current_database()
"""
"""One row (``horizon``, an ``xid``) per transaction, snapshot or standby feedback VACUUM keeps
row versions for: a transaction left open, whether between statements (holding no snapshot but
its own id) or in one; a standby's feedback, through its slot or its walsender (which names no
database); a prepared transaction. An autovacuum worker's is not one (VACUUM ignores another
vacuum's)."""
