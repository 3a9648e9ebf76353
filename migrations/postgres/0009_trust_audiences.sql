-- Trusts restricted to some services (spec/delegation.md §1): a trust with
-- rows here mints tokens only for these audiences; one without, for any
-- registered service. Deleted with the trust.
CREATE TABLE trust_audiences (
    trust_id TEXT NOT NULL REFERENCES trusts(id) ON DELETE CASCADE,
    audience TEXT NOT NULL,
    PRIMARY KEY (trust_id, audience)
);
