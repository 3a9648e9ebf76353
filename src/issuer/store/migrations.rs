//! The migration files of `migrations/{sqlite,postgres}/`, embedded in the
//! build and applied by sqlx's migrator (which keeps their checksums in
//! `_sqlx_migrations`). A new migration is a file `NNNN_what.sql` in each
//! directory and a line in each list below; a test checks the lists
//! against the directories.

use std::borrow::Cow;
use std::future::Future;
use std::pin::Pin;

use sqlx::AnyPool;
use sqlx::error::BoxDynError;
use sqlx::migrate::{MigrateError, Migration, MigrationSource, MigrationType, Migrator};

use super::{Backend, unavailable};
use crate::error::{Code, Error, Result};

macro_rules! embed {
    ($dialect:literal, $($file:literal),* $(,)?) => {
        &[$(($file, include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations/", $dialect, "/", $file)))),*]
    };
}

/// `(file name, SQL)` of each dialect, in version order.
const SQLITE: &[(&str, &str)] = embed!(
    "sqlite",
    "0001_identities_and_audit.sql",
    "0002_unknown_logins.sql",
    "0003_migrations_as_files.sql",
    "0004_bounded_login_records.sql",
    "0005_readiness_probe.sql",
    "0006_root_secret.sql",
    "0007_key_rotation.sql",
    "0008_trusts.sql",
    "0009_trust_audiences.sql",
    "0010_federation_peers.sql",
    "0011_admin_lifecycle.sql",
);
const POSTGRES: &[(&str, &str)] = embed!(
    "postgres",
    "0001_identities_and_audit.sql",
    "0002_unknown_logins.sql",
    "0003_migrations_as_files.sql",
    "0004_bounded_login_records.sql",
    "0005_readiness_probe.sql",
    "0006_root_secret.sql",
    "0007_key_rotation.sql",
    "0008_trusts.sql",
    "0009_trust_audiences.sql",
    "0010_federation_peers.sql",
    "0011_admin_lifecycle.sql",
);

/// The embedded files of one dialect, as sqlx's migrator takes them.
#[derive(Debug)]
struct Embedded(&'static [(&'static str, &'static str)]);

impl MigrationSource<'static> for Embedded {
    fn resolve(self) -> Pin<Box<dyn Future<Output = std::result::Result<Vec<Migration>, BoxDynError>> + Send>> {
        Box::pin(async move {
            self.0
                .iter()
                .map(|(file, sql)| {
                    let (version, description) = parse_file_name(file)?;
                    Ok(Migration::new(
                        version,
                        Cow::Owned(description),
                        MigrationType::Simple,
                        Cow::Borrowed(*sql),
                        false,
                    ))
                })
                .collect()
        })
    }
}

/// `0002_unknown_logins.sql` → `(2, "unknown logins")`.
fn parse_file_name(file: &str) -> std::result::Result<(i64, String), BoxDynError> {
    let stem = file.strip_suffix(".sql").ok_or("a migration file ends in .sql")?;
    let (version, description) = stem.split_once('_').ok_or("a migration file is NNNN_what.sql")?;
    Ok((version.parse()?, description.replace('_', " ")))
}

/// Applies the migrations `pool` has not applied yet, after checking the
/// ones it has against this build's.
pub(super) async fn run(pool: &AnyPool, backend: Backend) -> Result<()> {
    let files = match backend {
        Backend::Sqlite => SQLITE,
        Backend::Postgres => POSTGRES,
    };
    let migrator = Migrator::new(Embedded(files)).await.map_err(refused)?;
    let mut conn = pool.acquire().await.map_err(unavailable)?;
    migrator.run_direct(&mut *conn).await.map_err(refused)
}

/// What the operator is told when the database's migrations and this
/// build's disagree.
fn refused(e: MigrateError) -> Error {
    let schema = |message: String| Error::new(Code::IssuerConfig, message);
    match e {
        MigrateError::VersionMismatch(version) => schema(format!(
            "the database applied migration {version}, but this build's migration {version} differs from it \
             (its checksum changed): the migration file was edited after it was applied. Restore the file as \
             it was released; never edit an applied migration, add a new one"
        )),
        MigrateError::VersionMissing(version) => schema(format!(
            "the database applied migration {version}, which this build does not have: it was migrated by a \
             newer keybound. Run that release (downgrades are not supported)"
        )),
        MigrateError::Dirty(version) => schema(format!(
            "migration {version} was left partially applied; restore the database from a backup"
        )),
        other => Error::new(Code::IssuerUnavailable, format!("database migration failed: {other}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The embedded lists are the directories' files, and both dialects
    /// have the same versions and descriptions.
    #[test]
    fn embedded_lists_match_the_migration_directories() {
        for (dialect, files) in [("sqlite", SQLITE), ("postgres", POSTGRES)] {
            let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("migrations")
                .join(dialect);
            let mut on_disk: Vec<String> = std::fs::read_dir(&dir)
                .unwrap()
                .map(|e| e.unwrap().file_name().into_string().unwrap())
                .collect();
            on_disk.sort();
            let embedded: Vec<String> = files.iter().map(|(f, _)| f.to_string()).collect();
            assert_eq!(embedded, on_disk, "{dialect}: every file is embedded, in order");
            for (file, _) in files {
                parse_file_name(file).unwrap();
            }
        }
        let names = |files: &[(&str, &str)]| files.iter().map(|(f, _)| f.to_string()).collect::<Vec<_>>();
        assert_eq!(names(SQLITE), names(POSTGRES));
    }
}
