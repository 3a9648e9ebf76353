-- One row that /readyz inserts and deletes in a committed transaction, to
-- check that the database accepts writes (a full disk, a read-only file).
CREATE TABLE IF NOT EXISTS readiness_probe (id BIGINT PRIMARY KEY);
