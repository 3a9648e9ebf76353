-- The fingerprint of the issuer's root secret (never the secret): a
-- replica started with another secret refuses to start (issuer.md §7.2).
CREATE TABLE IF NOT EXISTS root_secret (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    fingerprint TEXT NOT NULL,
    recorded_at BIGINT NOT NULL
);
