-- Scheduled key rotations: from rotated_at on, key epochs are counted on
-- the clock plus epoch_offset seconds (issuer.md §7.2). Offsets only grow,
-- and two rotations never record the same one.
CREATE TABLE IF NOT EXISTS key_rotations (
    epoch_offset BIGINT PRIMARY KEY,
    rotated_at BIGINT NOT NULL
);
-- The kids (never key material) of the keys an emergency replacement of the
-- root secret retired, as hex: tokens under them are answered
-- session.key_replaced ("log in again") rather than cose.key_unknown.
CREATE TABLE IF NOT EXISTS retired_kids (
    kid TEXT PRIMARY KEY,
    retired_at BIGINT NOT NULL
);
