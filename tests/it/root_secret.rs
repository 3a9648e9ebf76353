//! The issuer's root secret: its fingerprint in the database, the refusal of
//! a replica with another secret, and the documented formats (issue 11 §3).
#![cfg(feature = "issuer")]

use std::sync::Arc;

use keybound::Code;
use keybound::issuer::{IssuerConfig, IssuerState, keys::root_fingerprint};
use keybound::verify::SystemClock;
use zeroize::Zeroizing;

fn config(dir: &std::path::Path, database_url: Option<String>) -> IssuerConfig {
    let mut config = IssuerConfig::new(dir);
    config.database_url = database_url;
    config
}

/// The databases to run against: SQLite always, PostgreSQL when configured
/// (a fresh schema each run, so concurrent tests do not collide).
async fn databases() -> Vec<Option<String>> {
    let mut urls = vec![None];
    if let Ok(base) = std::env::var("KEYBOUND_TEST_POSTGRES_URL") {
        sqlx::any::install_default_drivers();
        let suffix = keybound::encoding::hex_encode(
            &keybound::key::SigningKey::generate(keybound::key::Algorithm::EdDSA)
                .unwrap()
                .public_key()
                .thumbprint()
                .as_bytes()[..6],
        );
        let schema = format!("kbroot_{}_{suffix}", std::process::id());
        let pool = sqlx::AnyPool::connect(&base).await.expect("PostgreSQL reachable");
        sqlx::query(&format!("CREATE SCHEMA {schema}"))
            .execute(&pool)
            .await
            .unwrap();
        let sep = if base.contains('?') { '&' } else { '?' };
        urls.push(Some(format!("{base}{sep}options=-c%20search_path%3D{schema}")));
    }
    urls
}

#[tokio::test]
async fn a_replica_with_another_root_secret_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    for (i, url) in databases().await.into_iter().enumerate() {
        let data = dir.path().join(format!("db{i}"));
        std::fs::create_dir_all(&data).unwrap();
        // First start: root.key is created and its fingerprint recorded.
        let state = IssuerState::open(config(&data, url.clone()), Arc::new(SystemClock))
            .await
            .unwrap();
        drop(state);
        let root = std::fs::read(data.join("root.key")).unwrap();
        assert_eq!(root.len(), 32, "root.key is 32 raw bytes");
        if url.is_none() {
            // The database file and its write-ahead log.
            let db = [data.join("keybound.db"), data.join("keybound.db-wal")]
                .iter()
                .flat_map(|p| std::fs::read(p).unwrap_or_default())
                .collect::<Vec<u8>>();
            let fingerprint = root_fingerprint(&root);
            assert!(db.windows(fingerprint.len()).any(|w| w == fingerprint.as_bytes()));
            let hex = keybound::encoding::hex_encode(&root);
            assert!(!db.windows(32).any(|w| w == &root[..]), "the secret is not stored");
            assert!(!db.windows(hex.len()).any(|w| w == hex.as_bytes()), "nor its hex");
        }
        // The same secret again, from the environment form of the config: fine.
        let mut same = config(&data, url.clone());
        same.root_secret = Some(Zeroizing::new(root.clone()));
        drop(IssuerState::open(same, Arc::new(SystemClock)).await.unwrap());
        // Another secret (a replica with its own root.key, or a stray
        // KEYBOUND_ROOT_SECRET): refused, saying how to share the secret.
        let other_dir = dir.path().join(format!("other{i}"));
        std::fs::create_dir_all(&other_dir).unwrap();
        for other in [
            config(&other_dir, url.clone().or_else(|| Some(sqlite_url(&data)))),
            IssuerConfig {
                root_secret: Some(Zeroizing::new(vec![9; 32])),
                ..config(&data, url.clone())
            },
        ] {
            let error = IssuerState::open(other, Arc::new(SystemClock)).await.unwrap_err();
            assert_eq!(error.code(), Code::IssuerRootSecretMismatch, "{error}");
            let message = error.to_string();
            assert!(
                message.contains("KEYBOUND_ROOT_SECRET") && message.contains("root.key"),
                "{message}"
            );
            assert!(message.contains(&root_fingerprint(&root)), "{message}");
            assert!(
                message.contains("keybound admin rotate --emergency") && !message.contains("delete the row"),
                "{message}"
            );
            assert!(!message.contains(&keybound::encoding::hex_encode(&root)), "{message}");
        }
        // A root_secret_file holding the shared secret works.
        let file = dir.path().join(format!("shared{i}.key"));
        write_private(&file, &root);
        let mut shared = config(&other_dir, url.clone().or_else(|| Some(sqlite_url(&data))));
        shared.root_secret_file = Some(file);
        drop(IssuerState::open(shared, Arc::new(SystemClock)).await.unwrap());
        // An emergency replacement on this database: the old secret is refused
        // from then on, the new file starts, and the old kids are retired.
        let replaced = keybound::issuer::replace_root_secret(&config(&data, url.clone()))
            .await
            .unwrap();
        let new = std::fs::read(data.join("root.key")).unwrap();
        assert_eq!(replaced.fingerprint, root_fingerprint(&new));
        assert_eq!(replaced.previous_fingerprint, Some(root_fingerprint(&root)));
        let stale = IssuerConfig {
            root_secret: Some(Zeroizing::new(root.clone())),
            ..config(&data, url.clone())
        };
        let error = IssuerState::open(stale, Arc::new(SystemClock)).await.unwrap_err();
        assert_eq!(error.code(), Code::IssuerRootSecretMismatch, "{error}");
        let state = IssuerState::open(config(&data, url.clone()), Arc::new(SystemClock))
            .await
            .unwrap();
        let retired = {
            use keybound::issuer::store::RootSecrets;
            state.store.conn().await.unwrap().retired_kids().await.unwrap()
        };
        assert_eq!(retired.len(), replaced.retired_kids, "{backend}", backend = i);
        assert!(retired.iter().all(|kid| state.is_retired_kid(kid)));
    }
}

fn sqlite_url(data: &std::path::Path) -> String {
    format!("sqlite://{}?mode=rwc", data.join("keybound.db").display())
}

fn write_private(path: &std::path::Path, bytes: &[u8]) {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path).unwrap().write_all(bytes).unwrap();
}

/// `serve --help` describes the formats that exist: raw bytes in root.key,
/// hex or base64url in the environment, and the root_secret_file setting.
#[cfg(feature = "cli")]
#[test]
fn serve_help_describes_the_real_root_secret_formats() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_keybound"))
        .args(["serve", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8(output.stdout).unwrap();
    assert!(!help.contains("root.hex"), "{help}");
    for needle in [
        "32 random bytes stored raw",
        "root_secret_file",
        "--root-secret-file",
        "xxd -p",
    ] {
        assert!(help.contains(needle), "help lacks {needle:?}:\n{help}");
    }
}

/// `keybound admin rotate --emergency` offline on a data dir: a new root.key
/// (32 raw bytes, 0600), the database records its fingerprint, and the old
/// secret no longer starts an issuer there.
#[cfg(feature = "cli")]
#[tokio::test]
async fn the_emergency_replacement_runs_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    drop(
        IssuerState::open(config(&data, None), Arc::new(SystemClock))
            .await
            .unwrap(),
    );
    let old = std::fs::read(data.join("root.key")).unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_keybound"))
        .args(["admin", "rotate", "--emergency", "--data-dir"])
        .arg(&data)
        .env_remove("KEYBOUND_ROOT_SECRET")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let answer: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let new = std::fs::read(data.join("root.key")).unwrap();
    assert_eq!(new.len(), 32);
    assert_ne!(new, old);
    assert_eq!(answer["fingerprint"], root_fingerprint(&new));
    assert_eq!(answer["previous_fingerprint"], root_fingerprint(&old));
    assert!(answer["retired_kids"].as_u64().unwrap() >= 3, "{answer}");
    assert!(answer["next"].as_str().unwrap().contains("restart every replica"));
    assert!(
        !stdout.contains(&keybound::encoding::hex_encode(&new)),
        "the secret is not printed"
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(data.join("root.key")).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    // A replica still holding the old secret is refused; the new one starts.
    let stale = IssuerConfig {
        root_secret: Some(Zeroizing::new(old)),
        ..config(&data, None)
    };
    let error = IssuerState::open(stale, Arc::new(SystemClock)).await.unwrap_err();
    assert_eq!(error.code(), Code::IssuerRootSecretMismatch, "{error}");
    drop(
        IssuerState::open(config(&data, None), Arc::new(SystemClock))
            .await
            .unwrap(),
    );
    // The replacement is in the audit log.
    let store = keybound::issuer::Store::connect(&config(&data, None).database_url(), Default::default())
        .await
        .unwrap();
    let audit = {
        use keybound::issuer::store::Audit;
        store.conn().await.unwrap().list_audit(10).await.unwrap()
    };
    assert!(
        audit
            .iter()
            .any(|e| e.action == "keys.replace" && e.target == root_fingerprint(&new) && e.outcome == "ok"),
        "{audit:?}"
    );
}

/// The rotation command's help describes both modes, with examples; `serve
/// --help` points to it.
#[cfg(feature = "cli")]
#[test]
fn rotate_help_describes_both_modes() {
    let help = |args: &[&str]| {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_keybound"))
            .args(args)
            .output()
            .unwrap();
        String::from_utf8(output.stdout).unwrap()
    };
    let rotate = help(&["admin", "rotate", "--help"]);
    for needle in [
        "--force",
        "--emergency",
        "issuer.rotation_too_early",
        "session.key_replaced",
        "restart",
        "Examples:",
        "keybound admin rotate --emergency --data-dir",
    ] {
        assert!(rotate.contains(needle), "rotate help lacks {needle:?}:\n{rotate}");
    }
    let serve = help(&["serve", "--help"]);
    assert!(serve.contains("keybound admin rotate --emergency"), "{serve}");
    assert!(help(&["admin", "--help"]).contains("rotate"));
}
