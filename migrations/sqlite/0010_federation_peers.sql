-- Federation (spec/federation.md §2): the issuers this one trusts for
-- exchanges, the domains each is authoritative for (a domain has at most
-- one), the local projects each may reach (none listed: any), and the roles
-- granted here to users of those domains, keyed by (origin issuer, subject).
-- Removing a peer removes its domains, projects and grants.
CREATE TABLE peers (
    issuer_id TEXT PRIMARY KEY,
    keys_url TEXT NOT NULL,
    max_lifetime BIGINT,
    created_at BIGINT NOT NULL
);
CREATE TABLE peer_domains (
    issuer_id TEXT NOT NULL REFERENCES peers(issuer_id) ON DELETE CASCADE,
    domain TEXT NOT NULL UNIQUE,
    PRIMARY KEY (issuer_id, domain)
);
CREATE TABLE peer_projects (
    issuer_id TEXT NOT NULL REFERENCES peers(issuer_id) ON DELETE CASCADE,
    project_domain TEXT NOT NULL,
    project_name TEXT NOT NULL,
    PRIMARY KEY (issuer_id, project_domain, project_name),
    FOREIGN KEY (project_domain, project_name) REFERENCES projects(domain, name)
);
CREATE TABLE remote_assignments (
    origin_issuer TEXT NOT NULL REFERENCES peers(issuer_id) ON DELETE CASCADE,
    subject_domain TEXT NOT NULL,
    subject_name TEXT NOT NULL,
    project_domain TEXT NOT NULL,
    project_name TEXT NOT NULL,
    role TEXT NOT NULL REFERENCES roles(name),
    created_at BIGINT NOT NULL,
    PRIMARY KEY (origin_issuer, subject_domain, subject_name, project_domain, project_name, role),
    FOREIGN KEY (project_domain, project_name) REFERENCES projects(domain, name)
);
