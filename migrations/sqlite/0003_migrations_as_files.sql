-- Versions are now kept by sqlx's migrator (with checksums) in
-- _sqlx_migrations; the version table of earlier releases goes.
DROP TABLE IF EXISTS schema_version;
