-- Failed-login counters of names that are not users, so that the lockout
-- answers for them as for users (shared by replicas, kept over restarts).
CREATE TABLE IF NOT EXISTS unknown_logins (who TEXT PRIMARY KEY, failed_logins BIGINT NOT NULL DEFAULT 0,
    locked_until BIGINT NOT NULL DEFAULT 0, last_attempt BIGINT NOT NULL);
CREATE INDEX IF NOT EXISTS unknown_logins_last_attempt ON unknown_logins (last_attempt);
