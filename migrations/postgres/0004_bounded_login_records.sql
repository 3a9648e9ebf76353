-- Names that are not users are counted in a fixed number of buckets (a
-- keyed hash of the name), not one row per name: the table stays bounded
-- however many random names are tried. Their failures are totalled per
-- minute instead of one audit row per attempt. The audit log is pruned by
-- time (index below).
DELETE FROM unknown_logins;
CREATE TABLE login_bucket_salt (id INTEGER PRIMARY KEY CHECK (id = 1), salt TEXT NOT NULL);
INSERT INTO login_bucket_salt (id, salt)
    VALUES (1, replace(gen_random_uuid()::text || gen_random_uuid()::text, '-', ''));
CREATE TABLE unknown_login_totals (minute BIGINT NOT NULL, outcome TEXT NOT NULL, attempts BIGINT NOT NULL,
    PRIMARY KEY (minute, outcome));
CREATE INDEX audit_log_time ON audit_log (time);
