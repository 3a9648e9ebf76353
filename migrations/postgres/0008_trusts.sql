-- Trusts (spec/delegation.md): a trustor delegates some of its roles on one
-- project to a trustee. A child trust (redelegation) names its parent and
-- is deleted with it. Uses and expiry are NULL when unlimited.
CREATE TABLE trusts (
    id TEXT PRIMARY KEY,
    trustor_domain TEXT NOT NULL,
    trustor_name TEXT NOT NULL,
    trustee_domain TEXT NOT NULL,
    trustee_name TEXT NOT NULL,
    project_domain TEXT NOT NULL,
    project_name TEXT NOT NULL,
    expires_at BIGINT,
    remaining_uses BIGINT CHECK (remaining_uses >= 0),
    redelegation INTEGER NOT NULL DEFAULT 0 CHECK (redelegation BETWEEN 0 AND 3),
    parent_id TEXT REFERENCES trusts(id) ON DELETE CASCADE,
    created_at BIGINT NOT NULL,
    FOREIGN KEY (trustor_domain, trustor_name) REFERENCES users(domain, name),
    FOREIGN KEY (trustee_domain, trustee_name) REFERENCES users(domain, name),
    FOREIGN KEY (project_domain, project_name) REFERENCES projects(domain, name)
);
CREATE INDEX trusts_trustor ON trusts (trustor_domain, trustor_name);
CREATE INDEX trusts_trustee ON trusts (trustee_domain, trustee_name);
CREATE INDEX trusts_project ON trusts (project_domain, project_name);
CREATE INDEX trusts_parent ON trusts (parent_id);
CREATE TABLE trust_roles (
    trust_id TEXT NOT NULL REFERENCES trusts(id) ON DELETE CASCADE,
    role TEXT NOT NULL REFERENCES roles(name),
    PRIMARY KEY (trust_id, role)
);
