//! The store conformance suite: every test runs against SQLite (a file in a
//! temporary directory) and, when `KEYBOUND_TEST_POSTGRES_URL` is set,
//! against PostgreSQL in a schema of its own (created for the test,
//! dropped after it), so parallel tests never share tables.
#![cfg(feature = "issuer")]

use std::time::{Duration, Instant};

use keybound::Code;
use keybound::issuer::store::{
    Audit, AuditQuery, Backend, Federation, Grants, Identities, Logins, MintAudit, MintKey, Origin, Peer, PoolOptions,
    Services, SessionKey, Store, Trust, Trusts,
};
use keybound::names::{Name, ProjectName, UserName};

/// One database to test: a URL, and what to drop afterwards.
struct Database {
    backend: &'static str,
    url: String,
    _dir: Option<tempfile::TempDir>,
    schema: Option<(String, String)>,
}

impl Database {
    async fn connect(&self) -> keybound::Result<Store> {
        Store::connect(&self.url, PoolOptions::default()).await
    }

    async fn drop_schema(self) {
        if let Some((base, schema)) = self.schema {
            let pool = sqlx::AnyPool::connect(&base).await.unwrap();
            sqlx::query(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
                .execute(&pool)
                .await
                .unwrap();
        }
    }
}

fn random_suffix() -> String {
    let mut bytes = [0u8; 6];
    getrandom::fill(&mut bytes).unwrap();
    keybound::encoding::hex_encode(&bytes)
}

/// SQLite always; PostgreSQL when configured.
async fn databases() -> Vec<Database> {
    sqlx::any::install_default_drivers();
    let dir = tempfile::tempdir().unwrap();
    let mut out = vec![Database {
        backend: "sqlite",
        url: format!("sqlite://{}?mode=rwc", dir.path().join("store.db").display()),
        _dir: Some(dir),
        schema: None,
    }];
    match std::env::var("KEYBOUND_TEST_POSTGRES_URL") {
        Ok(base) => {
            let schema = format!("kbstore_{}", random_suffix());
            let pool = sqlx::AnyPool::connect(&base).await.expect("PostgreSQL reachable");
            sqlx::query(&format!("CREATE SCHEMA {schema}"))
                .execute(&pool)
                .await
                .unwrap();
            let sep = if base.contains('?') { '&' } else { '?' };
            out.push(Database {
                backend: "postgres",
                url: format!("{base}{sep}options=-c%20search_path%3D{schema}"),
                _dir: None,
                schema: Some((base, schema)),
            });
        }
        Err(_) => eprintln!("PostgreSQL part skipped: KEYBOUND_TEST_POSTGRES_URL is not set"),
    }
    out
}

fn user(s: &str) -> UserName {
    UserName::parse(s).unwrap()
}

fn project(s: &str) -> ProjectName {
    ProjectName::parse(s).unwrap()
}

fn name(s: &str) -> Name {
    Name::parse("name", s).unwrap()
}

/// Makes every insert into the audit log fail, as a full disk or a broken
/// audit table would.
async fn break_audit_log(store_url: &str, backend: &str) {
    let pool = sqlx::AnyPool::connect(store_url).await.unwrap();
    let statements: &[&str] = match backend {
        "sqlite" => {
            &["CREATE TRIGGER audit_fails BEFORE INSERT ON audit_log BEGIN SELECT RAISE(ABORT, 'audit refused'); END"]
        }
        _ => &[
            "CREATE FUNCTION audit_fails() RETURNS trigger AS $$ BEGIN RAISE EXCEPTION 'audit refused'; END $$ LANGUAGE plpgsql",
            "CREATE TRIGGER audit_fails BEFORE INSERT ON audit_log FOR EACH ROW EXECUTE FUNCTION audit_fails()",
        ],
    };
    for statement in statements {
        sqlx::query(statement).execute(&pool).await.unwrap();
    }
}

#[tokio::test]
async fn every_aggregate_writes_reads_and_refuses_by_error_kind() {
    for db in databases().await {
        let store = db.connect().await.unwrap();
        assert_eq!(
            store.backend(),
            if db.backend == "sqlite" {
                Backend::Sqlite
            } else {
                Backend::Postgres
            }
        );
        let mut tx = store.begin().await.unwrap();
        assert!(!tx.is_bootstrapped().await.unwrap());
        tx.bootstrap("$argon2id$stand-in", 100).await.unwrap();
        tx.create_domain(&name("stoughton"), 100).await.unwrap();
        tx.create_project(&project("turing@stoughton"), 100).await.unwrap();
        tx.create_role(&name("member"), 100).await.unwrap();
        tx.create_user(&user("ayoung@stoughton"), "person", Some("$argon2id$x"), 100)
            .await
            .unwrap();
        tx.create_user(&user("robot@stoughton"), "service", None, 100)
            .await
            .unwrap();
        tx.add_user_key(&user("robot@stoughton"), "thumb", "cose", 100)
            .await
            .unwrap();
        tx.grant(
            &user("ayoung@stoughton"),
            &project("turing@stoughton"),
            &name("member"),
            100,
        )
        .await
        .unwrap();
        tx.create_service("https://svc.example", 100).await.unwrap();
        tx.record(100, "admin@default", "domain.create", "stoughton", "ok")
            .await
            .unwrap();
        tx.commit().await.unwrap();

        let mut c = store.conn().await.unwrap();
        assert!(c.is_bootstrapped().await.unwrap(), "{}", db.backend);
        assert_eq!(
            c.list_domains().await.unwrap(),
            [("default".to_owned(), true), ("stoughton".to_owned(), true)]
        );
        let projects: Vec<String> = c
            .list_projects()
            .await
            .unwrap()
            .iter()
            .map(|(p, _)| p.to_string())
            .collect();
        assert_eq!(projects, ["admin@default", "turing@stoughton"]);
        let users: Vec<(String, bool)> = c
            .list_users()
            .await
            .unwrap()
            .into_iter()
            .map(|u| (u.user.to_string(), u.has_password))
            .collect();
        assert_eq!(
            users,
            [
                ("admin@default".to_owned(), true),
                ("ayoung@stoughton".to_owned(), true),
                ("robot@stoughton".to_owned(), false)
            ]
        );
        assert_eq!(c.list_roles().await.unwrap(), ["admin", "member"]);
        assert_eq!(c.list_grants().await.unwrap().len(), 2);
        assert_eq!(c.list_services().await.unwrap(), ["https://svc.example"]);
        assert!(c.user_has_key(&user("robot@stoughton"), "thumb").await.unwrap());
        assert!(!c.user_has_key(&user("ayoung@stoughton"), "thumb").await.unwrap());
        let audit = c.list_audit(10).await.unwrap();
        assert_eq!((audit[0].action.as_str(), audit[0].time), ("domain.create", 100));

        let facts = c
            .mint_facts(
                &user("ayoung@stoughton"),
                Some(&project("turing@stoughton")),
                "https://svc.example",
            )
            .await
            .unwrap();
        assert!(facts.service_registered && facts.user_enabled && facts.project_enabled);
        assert_eq!(facts.roles, ["member"]);
        let facts = c.mint_facts(&user("ghost@stoughton"), None, "nope").await.unwrap();
        assert!(!facts.service_registered && !facts.user_exists);

        // Disabling a domain disables its users and projects for a mint.
        c.set_domain_enabled(&name("stoughton"), false).await.unwrap();
        let facts = c
            .mint_facts(&user("ayoung@stoughton"), Some(&project("turing@stoughton")), "x")
            .await
            .unwrap();
        assert!(facts.user_exists && !facts.user_enabled && !facts.project_enabled);
        c.set_domain_enabled(&name("stoughton"), true).await.unwrap();

        // Uniqueness → conflict; a missing object → not found (by the
        // database's error kind, on both backends).
        let code = |r: keybound::Result<()>| r.unwrap_err().code();
        assert_eq!(code(c.create_domain(&name("stoughton"), 1).await), Code::IssuerConflict);
        assert_eq!(
            code(c.create_user(&user("ayoung@stoughton"), "person", None, 1).await),
            Code::IssuerConflict
        );
        assert_eq!(
            code(c.add_user_key(&user("robot@stoughton"), "thumb", "cose", 1).await),
            Code::IssuerConflict
        );
        assert_eq!(
            code(
                c.grant(
                    &user("ayoung@stoughton"),
                    &project("turing@stoughton"),
                    &name("member"),
                    1
                )
                .await
            ),
            Code::IssuerConflict
        );
        assert_eq!(
            code(c.create_service("https://svc.example", 1).await),
            Code::IssuerConflict
        );
        assert_eq!(code(c.create_role(&name("member"), 1).await), Code::IssuerConflict);
        assert_eq!(
            code(c.create_project(&project("x@nowhere"), 1).await),
            Code::IssuerNotFound
        );
        assert_eq!(
            code(c.create_user(&user("x@nowhere"), "person", None, 1).await),
            Code::IssuerNotFound
        );
        assert_eq!(
            code(
                c.grant(
                    &user("ayoung@stoughton"),
                    &project("turing@stoughton"),
                    &name("ghost"),
                    1
                )
                .await
            ),
            Code::IssuerNotFound
        );
        assert_eq!(
            code(c.set_user_enabled(&user("ghost@stoughton"), false).await),
            Code::IssuerNotFound
        );
        assert_eq!(
            code(c.set_project_enabled(&project("ghost@stoughton"), false).await),
            Code::IssuerNotFound
        );
        assert_eq!(code(c.delete_service("ghost").await), Code::IssuerNotFound);
        c.revoke(&user("ayoung@stoughton"), &project("turing@stoughton"), &name("member"))
            .await
            .unwrap();
        assert_eq!(
            code(
                c.revoke(&user("ayoung@stoughton"), &project("turing@stoughton"), &name("member"))
                    .await
            ),
            Code::IssuerNotFound
        );
        c.delete_service("https://svc.example").await.unwrap();
        assert!(c.list_services().await.unwrap().is_empty());

        let mut tx = store.begin().await.unwrap();
        assert_eq!(tx.bootstrap("again", 1).await.unwrap_err().code(), Code::IssuerConflict);
        drop(tx);
        drop(c);
        db.drop_schema().await;
    }
}

#[tokio::test]
async fn lockout_counts_locks_and_resets_in_the_database() {
    for db in databases().await {
        let store = db.connect().await.unwrap();
        let mut c = store.conn().await.unwrap();
        c.create_domain(&name("stoughton"), 0).await.unwrap();
        let bob = user("bob@stoughton");
        c.create_user(&bob, "person", Some("h"), 0).await.unwrap();
        // Three allowed, the third locks until 1000 + 60.
        for _ in 0..3 {
            assert!(c.reserve_login_attempt(&bob, 1000, 3, 60).await.unwrap());
        }
        assert!(!c.reserve_login_attempt(&bob, 1001, 3, 60).await.unwrap());
        let auth = c.user_auth(&bob).await.unwrap().unwrap();
        assert_eq!((auth.failed_logins, auth.locked_until), (3, 1060));
        // A run-out lock starts a new series.
        assert!(c.reserve_login_attempt(&bob, 1060, 3, 60).await.unwrap());
        assert_eq!(c.user_auth(&bob).await.unwrap().unwrap().failed_logins, 1);
        c.reset_login_failures(&bob).await.unwrap();
        assert_eq!(c.user_auth(&bob).await.unwrap().unwrap().failed_logins, 0);
        assert!(c.user_auth(&user("ghost@stoughton")).await.unwrap().is_none());

        let ghost = user("ghost@stoughton");
        for _ in 0..3 {
            assert!(c.reserve_unknown_login_attempt(&ghost, 1000, 3, 60).await.unwrap());
        }
        assert!(!c.reserve_unknown_login_attempt(&ghost, 1001, 3, 60).await.unwrap());
        assert!(c.reserve_unknown_login_attempt(&ghost, 1060, 3, 60).await.unwrap());
        drop(c);
        db.drop_schema().await;
    }
}

/// Names that are not users share a bounded set of counters keyed by a
/// salted hash (no name is stored); their failures are totalled per minute;
/// totals and audit entries are pruned by age.
#[tokio::test]
async fn unknown_names_are_bucketed_and_old_records_pruned() {
    for db in databases().await {
        let store = db.connect().await.unwrap();
        let mut c = store.conn().await.unwrap();
        for i in 0..500 {
            let name = user(&format!("random{i}@nowhere"));
            assert!(c.reserve_unknown_login_attempt(&name, 1000, 5, 60).await.unwrap());
            c.count_unknown_login_failure(1000 + i % 120, "issuer.invalid_credentials")
                .await
                .unwrap();
        }
        let pool = sqlx::AnyPool::connect(&db.url).await.unwrap();
        let rows: Vec<String> = sqlx::query_scalar("SELECT who FROM unknown_logins")
            .fetch_all(&pool)
            .await
            .unwrap();
        assert!(rows.len() <= 500 && rows.len() as u64 <= keybound::issuer::store::UNKNOWN_LOGIN_BUCKETS);
        assert!(
            rows.iter().all(|w| w.starts_with("bucket:") && !w.contains("random")),
            "{rows:?}"
        );
        let totals = c.unknown_login_totals(0).await.unwrap();
        let minutes: Vec<i64> = totals.iter().map(|t| t.minute).collect();
        assert_eq!(minutes, [960, 1020, 1080], "{}", db.backend);
        assert_eq!(totals.iter().map(|t| t.attempts).sum::<i64>(), 500);

        c.record(100, "a", "domain.create", "x", "ok").await.unwrap();
        c.record(200, "a", "domain.create", "y", "ok").await.unwrap();
        assert_eq!(c.prune_audit(150).await.unwrap(), 1);
        assert_eq!(c.list_audit(10).await.unwrap()[0].target, "y");
        assert_eq!(c.prune_unknown_login_totals(1020).await.unwrap(), 1);
        assert_eq!(c.unknown_login_totals(0).await.unwrap().len(), 2);
        drop(c);
        pool.close().await;
        db.drop_schema().await;
    }
}

/// A change whose audit record cannot be written is not committed: on both
/// backends, with a trigger that refuses every audit insert.
#[tokio::test]
async fn a_change_without_its_audit_record_is_not_committed() {
    for db in databases().await {
        let store = db.connect().await.unwrap();
        break_audit_log(&db.url, db.backend).await;
        let mut tx = store.begin().await.unwrap();
        tx.create_domain(&name("stoughton"), 1).await.unwrap();
        let refused = tx.record(1, "admin@default", "domain.create", "stoughton", "ok").await;
        assert_eq!(refused.unwrap_err().code(), Code::IssuerUnavailable, "{}", db.backend);
        drop(tx);
        let domains = store.conn().await.unwrap().list_domains().await.unwrap();
        assert!(domains.is_empty(), "{}: {domains:?}", db.backend);
        db.drop_schema().await;
    }
}

/// A database whose applied migration differs from this build's (an
/// edited migration file) is refused at start-up with a message that says
/// so, and one migrated by a newer build is refused too.
#[tokio::test]
async fn an_edited_or_unknown_migration_is_refused_at_start_up() {
    for db in databases().await {
        db.connect().await.unwrap();
        let pool = sqlx::AnyPool::connect(&db.url).await.unwrap();
        let original: Vec<u8> = sqlx::query_scalar("SELECT checksum FROM _sqlx_migrations WHERE version = 2")
            .fetch_one(&pool)
            .await
            .unwrap();
        sqlx::query("UPDATE _sqlx_migrations SET checksum = $1 WHERE version = 2")
            .bind(vec![0u8; 48])
            .execute(&pool)
            .await
            .unwrap();
        let refused = db.connect().await.unwrap_err();
        assert_eq!(refused.code(), Code::IssuerConfig, "{}", db.backend);
        assert!(
            refused.message().contains("migration 2") && refused.message().contains("edited"),
            "{}",
            refused.message()
        );

        sqlx::query("UPDATE _sqlx_migrations SET checksum = $1 WHERE version = 2")
            .bind(original)
            .execute(&pool)
            .await
            .unwrap();
        db.connect().await.unwrap();
        sqlx::query(
            "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time)
             VALUES (9999, 'from the future', $1, $2, 0)",
        )
        .bind(true)
        .bind(vec![0u8; 48])
        .execute(&pool)
        .await
        .unwrap();
        let refused = db.connect().await.unwrap_err();
        assert_eq!(refused.code(), Code::IssuerConfig);
        assert!(refused.message().contains("newer keybound"), "{}", refused.message());
        pool.close().await;
        db.drop_schema().await;
    }
}

/// The schema of the release before migrations were files, exactly as it
/// created it (statements of its migration array, its version table).
fn previous_release_schema(backend: &str) -> Vec<String> {
    let auto_id = if backend == "sqlite" {
        "INTEGER PRIMARY KEY AUTOINCREMENT"
    } else {
        "BIGSERIAL PRIMARY KEY"
    };
    let ddl = "CREATE TABLE schema_version (version BIGINT PRIMARY KEY);
     CREATE TABLE domains (name TEXT PRIMARY KEY, enabled INTEGER NOT NULL, created_at BIGINT NOT NULL);
     CREATE TABLE projects (domain TEXT NOT NULL REFERENCES domains(name), name TEXT NOT NULL, enabled INTEGER NOT NULL,
        created_at BIGINT NOT NULL, PRIMARY KEY (domain, name));
     CREATE TABLE users (domain TEXT NOT NULL REFERENCES domains(name), name TEXT NOT NULL, kind TEXT NOT NULL,
        enabled INTEGER NOT NULL, password_hash TEXT, failed_logins BIGINT NOT NULL DEFAULT 0,
        locked_until BIGINT NOT NULL DEFAULT 0, created_at BIGINT NOT NULL, PRIMARY KEY (domain, name));
     CREATE TABLE user_keys (domain TEXT NOT NULL, name TEXT NOT NULL, thumbprint TEXT NOT NULL, cose_key TEXT NOT NULL,
        created_at BIGINT NOT NULL, PRIMARY KEY (domain, name, thumbprint),
        FOREIGN KEY (domain, name) REFERENCES users(domain, name));
     CREATE TABLE roles (name TEXT PRIMARY KEY, created_at BIGINT NOT NULL);
     CREATE TABLE assignments (user_domain TEXT NOT NULL, user_name TEXT NOT NULL, project_domain TEXT NOT NULL,
        project_name TEXT NOT NULL, role TEXT NOT NULL REFERENCES roles(name), created_at BIGINT NOT NULL,
        PRIMARY KEY (user_domain, user_name, project_domain, project_name, role),
        FOREIGN KEY (user_domain, user_name) REFERENCES users(domain, name),
        FOREIGN KEY (project_domain, project_name) REFERENCES projects(domain, name));
     CREATE TABLE services (audience TEXT PRIMARY KEY, created_at BIGINT NOT NULL);
     CREATE TABLE audit_log (id {AUTO_ID}, time BIGINT NOT NULL, actor TEXT NOT NULL, action TEXT NOT NULL,
        target TEXT NOT NULL, outcome TEXT NOT NULL);
     CREATE TABLE unknown_logins (who TEXT PRIMARY KEY, failed_logins BIGINT NOT NULL DEFAULT 0,
        locked_until BIGINT NOT NULL DEFAULT 0, last_attempt BIGINT NOT NULL);
     CREATE INDEX unknown_logins_last_attempt ON unknown_logins (last_attempt);
     INSERT INTO schema_version (version) VALUES (1);
     INSERT INTO schema_version (version) VALUES (2);
     INSERT INTO domains (name, enabled, created_at) VALUES ('stoughton', 1, 7);
     INSERT INTO audit_log (time, actor, action, target, outcome) VALUES (7, 'admin@default', 'domain.create', 'stoughton', 'ok')";
    ddl.replace("{AUTO_ID}", auto_id)
        .split(';')
        .map(|s| s.trim().to_owned())
        .collect()
}

#[tokio::test]
async fn a_database_of_the_previous_release_upgrades_in_place() {
    for db in databases().await {
        let pool = sqlx::AnyPool::connect(&db.url).await.unwrap();
        for statement in previous_release_schema(db.backend) {
            sqlx::query(&statement).execute(&pool).await.unwrap();
        }
        let store = db.connect().await.unwrap();
        let mut c = store.conn().await.unwrap();
        assert_eq!(c.list_domains().await.unwrap(), [("stoughton".to_owned(), true)]);
        assert_eq!(c.list_audit(5).await.unwrap().len(), 1);
        c.record(8, "admin@default", "role.create", "member", "ok")
            .await
            .unwrap();
        assert_eq!(c.list_audit(5).await.unwrap()[0].id, 2, "the id sequence goes on");
        let applied: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM _sqlx_migrations")
            .fetch_one(&pool)
            .await
            .unwrap();
        assert!(applied >= 3);
        assert!(
            sqlx::query("SELECT version FROM schema_version")
                .fetch_all(&pool)
                .await
                .is_err(),
            "the old version table is gone"
        );
        drop(c);
        pool.close().await;
        db.drop_schema().await;
    }
}

/// The trusts aggregate: a trust and its roles round-trip (NULL expiry and
/// uses too), listing by user and project, uses are taken one by one down
/// to 0 and never below, unlimited trusts are left unlimited, a delete
/// cascades to the trusts redelegated from it and to their roles, and a
/// role or user that does not exist is refused by the foreign keys.
#[tokio::test]
async fn trusts_round_trip_count_uses_and_cascade() {
    for db in databases().await {
        let store = db.connect().await.unwrap();
        let mut tx = store.begin().await.unwrap();
        tx.bootstrap("$argon2id$stand-in", 100).await.unwrap();
        tx.create_domain(&name("stoughton"), 100).await.unwrap();
        tx.create_project(&project("turing@stoughton"), 100).await.unwrap();
        for role in ["member", "reader"] {
            tx.create_role(&name(role), 100).await.unwrap();
        }
        for u in ["ayoung@stoughton", "heat@stoughton", "nova@stoughton"] {
            tx.create_user(&user(u), "person", None, 100).await.unwrap();
        }
        let root = Trust {
            id: "AAAAAAAAAAAAAAAAAAAAAA".into(),
            trustor: user("ayoung@stoughton"),
            trustee: user("heat@stoughton"),
            project: project("turing@stoughton"),
            roles: vec!["member".into(), "reader".into()],
            audiences: vec!["https://nova.example".into()],
            expires_at: Some(5000),
            remaining_uses: Some(2),
            redelegation: 1,
            parent: None,
            created_at: 100,
        };
        let child = Trust {
            id: "BBBBBBBBBBBBBBBBBBBBBB".into(),
            trustor: user("heat@stoughton"),
            trustee: user("nova@stoughton"),
            roles: vec!["reader".into()],
            expires_at: None,
            remaining_uses: None,
            redelegation: 0,
            parent: Some(root.id.clone()),
            created_at: 101,
            ..root.clone()
        };
        tx.create_trust(&root).await.unwrap();
        tx.create_trust(&child).await.unwrap();
        tx.commit().await.unwrap();

        let mut c = store.conn().await.unwrap();
        assert_eq!(c.trust(&root.id).await.unwrap().as_ref(), Some(&root), "{}", db.backend);
        assert_eq!(c.trust_chain(&child.id).await.unwrap(), [child.clone(), root.clone()]);
        assert!(c.trust_chain("CCCCCCCCCCCCCCCCCCCCCC").await.unwrap().is_empty());
        assert_eq!(
            c.trusts_of(&user("heat@stoughton")).await.unwrap(),
            [root.clone(), child.clone()]
        );
        assert_eq!(
            c.trusts_of(&user("ayoung@stoughton")).await.unwrap(),
            vec![root.clone()]
        );
        assert_eq!(
            c.list_trusts(None, Some(&project("turing@stoughton")))
                .await
                .unwrap()
                .len(),
            2
        );
        assert_eq!(
            c.list_trusts(Some(&user("nova@stoughton")), None).await.unwrap(),
            vec![child.clone()]
        );
        assert_eq!(c.list_trusts(None, None).await.unwrap().len(), 2);
        assert!(c.consume_trust_use(&root.id).await.unwrap());
        assert!(c.consume_trust_use(&root.id).await.unwrap());
        assert!(!c.consume_trust_use(&root.id).await.unwrap(), "never below 0");
        assert_eq!(c.trust(&root.id).await.unwrap().unwrap().remaining_uses, Some(0));
        for _ in 0..3 {
            assert!(c.consume_trust_use(&child.id).await.unwrap());
        }
        assert_eq!(c.trust(&child.id).await.unwrap().unwrap().remaining_uses, None);
        assert!(!c.consume_trust_use("CCCCCCCCCCCCCCCCCCCCCC").await.unwrap());
        // Foreign keys: an unknown role or trustee.
        let ghost_role = Trust {
            id: "DDDDDDDDDDDDDDDDDDDDDD".into(),
            roles: vec!["nosuchrole".into()],
            ..root.clone()
        };
        let mut tx = store.begin().await.unwrap();
        assert_eq!(
            tx.create_trust(&ghost_role).await.unwrap_err().code(),
            Code::IssuerNotFound
        );
        drop(tx);
        let ghost_user = Trust {
            id: "EEEEEEEEEEEEEEEEEEEEEE".into(),
            trustee: user("ghost@stoughton"),
            ..root.clone()
        };
        let mut tx = store.begin().await.unwrap();
        assert_eq!(
            tx.create_trust(&ghost_user).await.unwrap_err().code(),
            Code::IssuerNotFound
        );
        drop(tx);
        // Deleting the root deletes the child and every role row.
        let mut tx = store.begin().await.unwrap();
        assert!(tx.delete_trust(&root.id).await.unwrap());
        tx.commit().await.unwrap();
        assert!(c.trust(&child.id).await.unwrap().is_none(), "{}: cascaded", db.backend);
        let roles: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM trust_roles")
            .fetch_one(&mut *c)
            .await
            .unwrap();
        assert_eq!(roles, 0);
        assert!(!c.delete_trust(&root.id).await.unwrap());
        drop(c);
        drop(store);
        db.drop_schema().await;
    }
}

/// The pool's size and acquire timeout are the configured ones: with one
/// connection held, the next request waits the timeout, then is refused.
#[tokio::test]
async fn pool_size_and_acquire_timeout_are_honoured() {
    for db in databases().await {
        let options = PoolOptions {
            max_connections: Some(1),
            acquire_timeout: Duration::from_millis(300),
        };
        let store = Store::connect(&db.url, options).await.unwrap();
        let held = store.conn().await.unwrap();
        let started = Instant::now();
        let refused = store.conn().await.unwrap_err();
        assert_eq!(refused.code(), Code::IssuerUnavailable, "{}", db.backend);
        let waited = started.elapsed();
        assert!(
            waited >= Duration::from_millis(250) && waited < Duration::from_secs(3),
            "{waited:?}"
        );
        drop(held);
        store.conn().await.unwrap();
        db.drop_schema().await;
    }
}

/// A trust of `trustor` to `trustee` on turing@stoughton with `roles`.
fn trust(id: char, trustor: &str, trustee: &str, roles: &[&str], parent: Option<String>) -> Trust {
    Trust {
        id: id.to_string().repeat(22),
        trustor: user(trustor),
        trustee: user(trustee),
        project: project("turing@stoughton"),
        roles: roles.iter().map(|r| (*r).to_owned()).collect(),
        audiences: Vec::new(),
        expires_at: None,
        remaining_uses: None,
        redelegation: u8::from(parent.is_none()).into(),
        parent,
        created_at: 100,
    }
}

/// Deletes: a domain with projects or users, a role still granted,
/// granted remotely or delegated, and a project a peer is limited to are
/// refused (`issuer.in_use`); the bootstrap's objects are protected; a
/// user takes its grants, keys and trusts (and their redelegations) along,
/// a project its grants, remote grants and trusts; what is gone is
/// `issuer.not_found`. On both backends.
#[tokio::test]
async fn deletes_refuse_what_is_referred_to_and_take_the_rest_along() {
    for db in databases().await {
        let store = db.connect().await.unwrap();
        let mut tx = store.begin().await.unwrap();
        tx.bootstrap("$argon2id$stand-in", 100).await.unwrap();
        tx.create_domain(&name("stoughton"), 100).await.unwrap();
        tx.create_domain(&name("empty"), 100).await.unwrap();
        for p in ["turing@stoughton", "lovelace@stoughton"] {
            tx.create_project(&project(p), 100).await.unwrap();
        }
        for role in ["member", "reader", "unused", "remote"] {
            tx.create_role(&name(role), 100).await.unwrap();
        }
        for u in ["ayoung@stoughton", "heat@stoughton", "nova@stoughton"] {
            tx.create_user(&user(u), "person", None, 100).await.unwrap();
        }
        tx.add_user_key(&user("ayoung@stoughton"), "thumb-a", "cose", 100)
            .await
            .unwrap();
        tx.grant(
            &user("ayoung@stoughton"),
            &project("turing@stoughton"),
            &name("member"),
            100,
        )
        .await
        .unwrap();
        tx.grant(
            &user("heat@stoughton"),
            &project("lovelace@stoughton"),
            &name("reader"),
            100,
        )
        .await
        .unwrap();
        // ayoung → heat → nova (a redelegation), and nova → heat.
        let root = trust('A', "ayoung@stoughton", "heat@stoughton", &["member"], None);
        let child = trust(
            'B',
            "heat@stoughton",
            "nova@stoughton",
            &["member"],
            Some(root.id.clone()),
        );
        let other = trust('C', "nova@stoughton", "heat@stoughton", &["reader"], None);
        for t in [&root, &child, &other] {
            tx.create_trust(t).await.unwrap();
        }
        let peer = Peer {
            issuer: "https://hyde.example".into(),
            keys_url: "https://hyde.example/keys".into(),
            domains: vec!["hyde".into()],
            projects: vec![project("lovelace@stoughton")],
            max_lifetime: None,
        };
        tx.create_peer(&peer, 100).await.unwrap();
        tx.grant_remote(
            &peer.issuer,
            &user("eve@hyde"),
            &project("turing@stoughton"),
            &name("remote"),
            100,
        )
        .await
        .unwrap();
        tx.commit().await.unwrap();

        let mut c = store.conn().await.unwrap();
        let code = |r: keybound::Result<()>| r.unwrap_err().code();
        // Protected, whatever refers to them.
        assert_eq!(code(c.delete_domain(&name("default")).await), Code::IssuerProtected);
        assert_eq!(
            c.delete_project(&project("admin@default")).await.unwrap_err().code(),
            Code::IssuerProtected
        );
        assert_eq!(
            c.delete_user(&user("admin@default")).await.unwrap_err().code(),
            Code::IssuerProtected
        );
        assert_eq!(code(c.delete_role(&name("admin")).await), Code::IssuerProtected);
        // Refused while referred to, with what refers in the message.
        let busy = c.delete_domain(&name("stoughton")).await.unwrap_err();
        assert_eq!(busy.code(), Code::IssuerInUse, "{}", db.backend);
        assert!(busy.message().contains("2 projects and 3 users"), "{}", busy.message());
        for (role, what) in [
            ("member", "1 grant and 2 trusts"),
            ("reader", "1 grant and 1 trust"),
            ("remote", "1 remote grant"),
        ] {
            let busy = c.delete_role(&name(role)).await.unwrap_err();
            assert_eq!(busy.code(), Code::IssuerInUse, "{role}");
            assert!(busy.message().contains(what), "{role}: {}", busy.message());
        }
        let limited = c.delete_project(&project("lovelace@stoughton")).await.unwrap_err();
        assert_eq!(limited.code(), Code::IssuerInUse);
        assert!(limited.message().contains("federation peer"), "{}", limited.message());
        // Unreferenced: gone, then not found.
        c.delete_domain(&name("empty")).await.unwrap();
        assert_eq!(code(c.delete_domain(&name("empty")).await), Code::IssuerNotFound);
        c.delete_role(&name("unused")).await.unwrap();
        assert_eq!(code(c.delete_role(&name("unused")).await), Code::IssuerNotFound);
        assert_eq!(
            c.delete_user(&user("ghost@stoughton")).await.unwrap_err().code(),
            Code::IssuerNotFound
        );
        assert_eq!(
            c.delete_project(&project("ghost@stoughton")).await.unwrap_err().code(),
            Code::IssuerNotFound
        );
        // A user takes its grant, its key and the trusts it is in along:
        // heat is trustee of A, trustor of B (A's child) and trustee of C.
        let removed = c.delete_user(&user("heat@stoughton")).await.unwrap();
        assert_eq!((removed.grants, removed.keys), (1, 0), "{}", db.backend);
        assert!(removed.trusts >= 2, "{removed:?}");
        assert!(c.list_trusts(None, None).await.unwrap().is_empty(), "{}", db.backend);
        assert!(c.user_record(&user("heat@stoughton")).await.unwrap().is_none());
        let removed = c.delete_user(&user("ayoung@stoughton")).await.unwrap();
        assert_eq!((removed.grants, removed.keys, removed.trusts), (1, 1, 0));
        assert!(!c.user_has_key(&user("ayoung@stoughton"), "thumb-a").await.unwrap());
        // A project takes the remote grant on it along; the peer's project
        // limit still holds lovelace.
        let removed = c.delete_project(&project("turing@stoughton")).await.unwrap();
        assert_eq!((removed.grants, removed.remote_grants, removed.trusts), (0, 1, 0));
        assert!(c.list_remote_grants().await.unwrap().is_empty());
        c.delete_role(&name("remote")).await.unwrap();
        c.delete_peer(&peer.issuer).await.unwrap();
        c.delete_project(&project("lovelace@stoughton")).await.unwrap();
        c.delete_user(&user("nova@stoughton")).await.unwrap();
        c.delete_domain(&name("stoughton")).await.unwrap();
        assert_eq!(c.list_domains().await.unwrap(), [("default".to_owned(), true)]);
        drop(c);
        db.drop_schema().await;
    }
}

/// What a mint from a session of `user` with `thumbprint` issued at `issued_at` reads.
async fn session_facts(
    c: &mut keybound::issuer::store::Conn,
    user: &UserName,
    thumbprint: &str,
    issued_at: i64,
) -> keybound::issuer::store::MintFacts {
    c.mint_facts_for(
        user,
        None,
        "",
        Some(SessionKey {
            thumbprint,
            issued_at,
            leeway: 0,
        }),
    )
    .await
    .unwrap()
}

/// A user's record, keys and filtered grants; a removed key refuses the
/// sessions bound to it that began at or before its removal, and a user
/// created again refuses the sessions of the one before; an unlock resets
/// the lockout. On both backends.
#[tokio::test]
async fn user_records_keys_removals_and_unlock() {
    for db in databases().await {
        let store = db.connect().await.unwrap();
        let mut c = store.conn().await.unwrap();
        c.create_domain(&name("stoughton"), 100).await.unwrap();
        c.create_project(&project("turing@stoughton"), 100).await.unwrap();
        for role in ["member", "reader"] {
            c.create_role(&name(role), 100).await.unwrap();
        }
        let bob = user("bob@stoughton");
        c.create_user(&bob, "service", Some("h"), 200).await.unwrap();
        c.create_user(&user("amy@stoughton"), "person", None, 200)
            .await
            .unwrap();
        c.add_user_key(&bob, "thumb-2", "cose", 300).await.unwrap();
        c.add_user_key(&bob, "thumb-1", "cose", 250).await.unwrap();
        for (u, role) in [
            ("bob@stoughton", "member"),
            ("bob@stoughton", "reader"),
            ("amy@stoughton", "reader"),
        ] {
            c.grant(&user(u), &project("turing@stoughton"), &name(role), 200)
                .await
                .unwrap();
        }
        let record = c.user_record(&bob).await.unwrap().unwrap();
        assert_eq!(
            (
                record.kind.as_str(),
                record.enabled,
                record.domain_enabled,
                record.has_password,
                record.created_at
            ),
            ("service", true, true, true, 200)
        );
        let keys: Vec<(String, i64)> = c
            .list_user_keys(&bob)
            .await
            .unwrap()
            .into_iter()
            .map(|k| (k.thumbprint, k.added_at))
            .collect();
        assert_eq!(keys, [("thumb-1".to_owned(), 250), ("thumb-2".to_owned(), 300)]);
        let grants = |g: Vec<keybound::issuer::store::Grant>| -> Vec<String> {
            g.into_iter()
                .map(|g| format!("{} {} {}", g.user, g.role, g.project))
                .collect()
        };
        assert_eq!(
            grants(c.list_grants_where(Some(&bob), None, None).await.unwrap()),
            [
                "bob@stoughton member turing@stoughton",
                "bob@stoughton reader turing@stoughton"
            ]
        );
        assert_eq!(
            grants(
                c.list_grants_where(None, Some(&project("turing@stoughton")), Some(&name("reader")))
                    .await
                    .unwrap()
            ),
            [
                "amy@stoughton reader turing@stoughton",
                "bob@stoughton reader turing@stoughton"
            ]
        );
        assert!(
            c.list_grants_where(None, Some(&project("ghost@stoughton")), None)
                .await
                .unwrap()
                .is_empty()
        );
        assert_eq!(c.list_grants_where(None, None, None).await.unwrap().len(), 3);

        // Removing thumb-1 at 1000: sessions from 1000 or before are refused, later ones not.
        assert!(!session_facts(&mut c, &bob, "thumb-1", 900).await.key_removed);
        c.remove_user_key(&bob, "thumb-1", 1000, 0).await.unwrap();
        assert_eq!(
            c.remove_user_key(&bob, "thumb-1", 1001, 0).await.unwrap_err().code(),
            Code::IssuerNotFound
        );
        assert!(
            session_facts(&mut c, &bob, "thumb-1", 900).await.key_removed,
            "{}",
            db.backend
        );
        assert!(session_facts(&mut c, &bob, "thumb-1", 1000).await.key_removed);
        assert!(!session_facts(&mut c, &bob, "thumb-1", 1001).await.key_removed);
        assert!(
            !session_facts(&mut c, &bob, "thumb-2", 900).await.key_removed,
            "another key"
        );
        assert!(!c.user_has_key(&bob, "thumb-1").await.unwrap());
        // Registered again: key login works, the old sessions stay refused.
        c.add_user_key(&bob, "thumb-1", "cose", 1100).await.unwrap();
        assert!(session_facts(&mut c, &bob, "thumb-1", 900).await.key_removed);
        // Removals older than the horizon are forgotten at the next removal.
        c.remove_user_key(&bob, "thumb-2", 50_000, 40_000).await.unwrap();
        assert!(
            !session_facts(&mut c, &bob, "thumb-1", 900).await.key_removed,
            "forgotten"
        );
        assert!(session_facts(&mut c, &bob, "thumb-2", 49_000).await.key_removed);
        // A user created again is not the one the old sessions were of
        // (issued more than the leeway before its creation).
        let at = |issued_at: i64, leeway: i64| SessionKey {
            thumbprint: "thumb-9",
            issued_at,
            leeway,
        };
        let old = session_facts(&mut c, &bob, "thumb-9", 250).await;
        assert!(old.same_user(at(250, 0)) && !old.same_user(at(199, 0)) && old.same_user(at(199, 1)));
        c.delete_user(&bob).await.unwrap();
        assert!(!session_facts(&mut c, &bob, "thumb-9", 250).await.same_user(at(250, 0)));
        c.create_user(&bob, "person", None, 60_000).await.unwrap();
        let again = session_facts(&mut c, &bob, "thumb-9", 250).await;
        assert!(again.user_exists && !again.same_user(at(250, 30)) && again.same_user(at(59_970, 30)));
        // A removal refuses the sessions up to the leeway after it, too.
        c.add_user_key(&bob, "thumb-3", "cose", 60_000).await.unwrap();
        c.remove_user_key(&bob, "thumb-3", 61_000, 0).await.unwrap();
        let late = |issued_at: i64| SessionKey {
            thumbprint: "thumb-3",
            issued_at,
            leeway: 30,
        };
        for (issued_at, refused) in [(61_030, true), (61_031, false)] {
            let facts = c.mint_facts_for(&bob, None, "", Some(late(issued_at))).await.unwrap();
            assert_eq!(facts.key_removed, refused, "{issued_at}");
        }
        assert!(
            !session_facts(&mut c, &bob, "thumb-2", 49_000).await.key_removed,
            "removals went with the user"
        );

        // Unlock: the counter and the lock are cleared.
        for _ in 0..3 {
            c.reserve_login_attempt(&bob, 70_000, 3, 60).await.unwrap();
        }
        let locked = c.user_record(&bob).await.unwrap().unwrap();
        assert_eq!((locked.failed_logins, locked.locked_until), (3, 70_060));
        c.unlock_user(&bob).await.unwrap();
        let unlocked = c.user_record(&bob).await.unwrap().unwrap();
        assert_eq!((unlocked.failed_logins, unlocked.locked_until), (0, 0));
        assert!(c.reserve_login_attempt(&bob, 70_001, 3, 60).await.unwrap());
        assert_eq!(
            c.unlock_user(&user("ghost@stoughton")).await.unwrap_err().code(),
            Code::IssuerNotFound
        );
        drop(c);
        db.drop_schema().await;
    }
}

/// Audit entries carry their origin; listings page by id and filter by
/// actor, action, target and time; mint counts are upserted into one row
/// per (user, key, audience, minute), and the coalescer writes the first
/// mint at once and the rest at a flush. On both backends.
#[tokio::test]
async fn audit_pages_filters_origins_and_coalesced_mints() {
    for db in databases().await {
        let store = db.connect().await.unwrap();
        let mut c = store.conn().await.unwrap();
        let from = Origin {
            client: "192.0.2.7".into(),
            key_thumbprint: "thumb".into(),
        };
        for i in 0..30_i64 {
            let (actor, action) = if i % 3 == 0 {
                ("a@x", "grant")
            } else {
                ("b@x", "revoke")
            };
            c.record_from(&from, 1000 + i, actor, action, &format!("t{}", i % 2), "ok")
                .await
                .unwrap();
        }
        c.record(2000, "-", "bootstrap", "admin@default", "ok").await.unwrap();
        let all = c.list_audit(100).await.unwrap();
        assert_eq!(all.len(), 31);
        assert_eq!(
            (all[0].client.as_str(), all[0].key_thumbprint.as_str(), all[0].count),
            ("-", "-", 1)
        );
        assert_eq!(
            (all[1].client.as_str(), all[1].key_thumbprint.as_str()),
            ("192.0.2.7", "thumb")
        );
        // Pages of 7 by the id cursor: every entry once, newest first.
        let mut seen = Vec::new();
        let mut before = None;
        loop {
            let page = c
                .query_audit(&AuditQuery {
                    limit: 7,
                    before,
                    ..AuditQuery::default()
                })
                .await
                .unwrap();
            seen.extend(page.iter().map(|e| e.id));
            match page.last() {
                Some(last) if page.len() == 7 => before = Some(last.id),
                _ => break,
            }
        }
        assert_eq!(seen, all.iter().map(|e| e.id).collect::<Vec<_>>(), "{}", db.backend);
        let select = |q: AuditQuery| {
            let store = store.clone();
            async move {
                store
                    .conn()
                    .await
                    .unwrap()
                    .query_audit(&AuditQuery { limit: 1000, ..q })
                    .await
                    .unwrap()
            }
        };
        let grants = select(AuditQuery {
            action: Some("grant".into()),
            ..AuditQuery::default()
        })
        .await;
        assert_eq!(grants.len(), 10);
        assert!(grants.iter().all(|e| e.actor == "a@x"));
        let narrow = select(AuditQuery {
            actor: Some("b@x".into()),
            target: Some("t1".into()),
            since: Some(1010),
            until: Some(1019),
            ..AuditQuery::default()
        })
        .await;
        let times: Vec<i64> = narrow.iter().map(|e| e.time).collect();
        assert_eq!(times, [1019, 1017, 1013, 1011], "{}", db.backend);
        assert!(
            select(AuditQuery {
                actor: Some("' OR 1=1 --".into()),
                ..AuditQuery::default()
            })
            .await
            .is_empty()
        );

        // Upserts on (minute, actor, key, audience).
        let key = MintKey {
            minute: 3000,
            actor: "ayoung@stoughton".into(),
            key_thumbprint: "k1".into(),
            audience: "https://nova.example".into(),
        };
        c.add_mints(&key, "192.0.2.7", 1).await.unwrap();
        c.add_mints(&key, "198.51.100.1", 4).await.unwrap();
        let other = MintKey {
            audience: "https://glance.example".into(),
            ..key.clone()
        };
        c.add_mints(&other, "192.0.2.7", 2).await.unwrap();
        let mints = select(AuditQuery {
            action: Some("token.mint".into()),
            ..AuditQuery::default()
        })
        .await;
        let rows: Vec<(&str, i64, &str)> = mints
            .iter()
            .map(|e| (e.target.as_str(), e.count, e.client.as_str()))
            .collect();
        assert_eq!(
            rows,
            [
                ("https://glance.example", 2, "192.0.2.7"),
                ("https://nova.example", 5, "192.0.2.7")
            ],
            "{}",
            db.backend
        );
        // The coalescer: the first mint of a key is a row at once, the
        // others wait for a flush; a flush past the minute forgets the key.
        let audit = MintAudit::default();
        let fresh = MintKey {
            minute: 6000,
            ..key.clone()
        };
        audit.note(&store, fresh.clone(), "192.0.2.9").await.unwrap();
        let count = || {
            let select = &select;
            async move {
                select(AuditQuery {
                    action: Some("token.mint".into()),
                    since: Some(6000),
                    ..AuditQuery::default()
                })
                .await
                .iter()
                .map(|e| e.count)
                .sum::<i64>()
            }
        };
        assert_eq!(count().await, 1);
        for _ in 0..9 {
            audit.note(&store, fresh.clone(), "192.0.2.9").await.unwrap();
        }
        assert_eq!((count().await, audit.unwritten()), (1, 9));
        audit.flush(&store, 6030).await.unwrap();
        assert_eq!((count().await, audit.unwritten()), (10, 0));
        audit.flush(&store, 6060).await.unwrap();
        audit.note(&store, fresh.clone(), "192.0.2.9").await.unwrap();
        assert_eq!(count().await, 11, "a forgotten key writes its next mint at once");
        drop(c);
        db.drop_schema().await;
    }
}
