-- Audit records name where a request came from: the client address and the
-- thumbprint of the key its token or proof is bound to ('-' where there is
-- none, as for the bootstrap). `events` is how many occurrences a row
-- stands for: 1, except for `token.mint`, one row per (user, key,
-- audience, minute) whose count grows (spec/issuer.md §10.4); the unique
-- index is what those rows are upserted on. Listing filters by actor,
-- action and target walk the indexes below, newest id first.
ALTER TABLE audit_log ADD COLUMN client TEXT NOT NULL DEFAULT '-';
ALTER TABLE audit_log ADD COLUMN key_thumbprint TEXT NOT NULL DEFAULT '-';
ALTER TABLE audit_log ADD COLUMN events BIGINT NOT NULL DEFAULT 1;
CREATE UNIQUE INDEX audit_log_mints ON audit_log (time, actor, key_thumbprint, target) WHERE action = 'token.mint';
CREATE INDEX audit_log_actor ON audit_log (actor, id);
CREATE INDEX audit_log_action ON audit_log (action, id);
CREATE INDEX audit_log_target ON audit_log (target, id);
-- Keys an administrator removed from a user: a session bound to one and
-- issued before its removal mints nothing more. Rows older than the
-- longest session are dropped when another key is removed.
CREATE TABLE removed_user_keys (
    domain TEXT NOT NULL,
    name TEXT NOT NULL,
    thumbprint TEXT NOT NULL,
    removed_at BIGINT NOT NULL,
    PRIMARY KEY (domain, name, thumbprint)
);
