-- Domains, projects, users and their keys, roles, role assignments,
-- services, and the audit log. IF NOT EXISTS: a database made before
-- migrations were files already has these tables (the same ones).
CREATE TABLE IF NOT EXISTS domains (name TEXT PRIMARY KEY, enabled INTEGER NOT NULL, created_at BIGINT NOT NULL);
CREATE TABLE IF NOT EXISTS projects (domain TEXT NOT NULL REFERENCES domains(name), name TEXT NOT NULL,
    enabled INTEGER NOT NULL, created_at BIGINT NOT NULL, PRIMARY KEY (domain, name));
CREATE TABLE IF NOT EXISTS users (domain TEXT NOT NULL REFERENCES domains(name), name TEXT NOT NULL, kind TEXT NOT NULL,
    enabled INTEGER NOT NULL, password_hash TEXT, failed_logins BIGINT NOT NULL DEFAULT 0,
    locked_until BIGINT NOT NULL DEFAULT 0, created_at BIGINT NOT NULL, PRIMARY KEY (domain, name));
CREATE TABLE IF NOT EXISTS user_keys (domain TEXT NOT NULL, name TEXT NOT NULL, thumbprint TEXT NOT NULL,
    cose_key TEXT NOT NULL, created_at BIGINT NOT NULL, PRIMARY KEY (domain, name, thumbprint),
    FOREIGN KEY (domain, name) REFERENCES users(domain, name));
CREATE TABLE IF NOT EXISTS roles (name TEXT PRIMARY KEY, created_at BIGINT NOT NULL);
CREATE TABLE IF NOT EXISTS assignments (user_domain TEXT NOT NULL, user_name TEXT NOT NULL,
    project_domain TEXT NOT NULL, project_name TEXT NOT NULL, role TEXT NOT NULL REFERENCES roles(name),
    created_at BIGINT NOT NULL,
    PRIMARY KEY (user_domain, user_name, project_domain, project_name, role),
    FOREIGN KEY (user_domain, user_name) REFERENCES users(domain, name),
    FOREIGN KEY (project_domain, project_name) REFERENCES projects(domain, name));
CREATE TABLE IF NOT EXISTS services (audience TEXT PRIMARY KEY, created_at BIGINT NOT NULL);
CREATE TABLE IF NOT EXISTS audit_log (id BIGSERIAL PRIMARY KEY, time BIGINT NOT NULL, actor TEXT NOT NULL,
    action TEXT NOT NULL, target TEXT NOT NULL, outcome TEXT NOT NULL);
