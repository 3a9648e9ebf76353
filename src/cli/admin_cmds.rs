//! `keybound admin …`: bootstrap and emergency rotation on the database, every
//! other command through the issuer's admin API with the stored session.

use std::io::{IsTerminal, Read};
use std::path::PathBuf;
use std::process::ExitCode;

use serde_json::{Value, json};
use zeroize::Zeroizing;

use super::server_cmds::IssuerArgs;
use super::session::{self, runtime};
use super::{CliError, EXIT_FAILURE, print_stdout};
use crate::client::{Scope, error_from_response};
use crate::error::{Code, Error};

pub(crate) const ADMIN_ABOUT: &str =
    "Administer the issuer: bootstrap, domains, projects, users, roles, grants, services, audit, key rotation";
pub(crate) const ADMIN_LONG: &str = "\
Administer the issuer.

`keybound admin bootstrap` creates the first admin (admin@default) directly in the issuer's database, \
with a password from stdin or KEYBOUND_ADMIN_PASSWORD; there is no default password. `keybound admin \
rotate --emergency` (replacing a compromised root secret) also works on the database directly. Every other admin \
command calls the issuer's admin API with your stored session (log in as admin@default first): it gets \
an admin token for project admin@default and signs the request with your key. Results are printed as \
JSON. Every admin action is written to the issuer's audit log.";
pub(crate) const ADMIN_EXAMPLES: &str = "\
Examples:
  echo \"$ADMIN_PW\" | keybound admin bootstrap --data-dir ./keybound-data
  keybound login --issuer http://127.0.0.1:8080 --user admin@default
  keybound admin domain create stoughton
  keybound admin project create turing --domain stoughton
  keybound admin user create ayoung@stoughton --password-stdin
  keybound admin role create member
  keybound admin grant ayoung@stoughton turing@stoughton member
  keybound admin service create https://nova.example
  keybound admin peer add https://stoughton.example --domain stoughton
  keybound admin grant ayoung@stoughton turing@canton member --remote
  keybound admin audit --limit 20
  keybound admin rotate";

/// `keybound admin`.
#[derive(Debug, clap::Args)]
pub(crate) struct AdminArgs {
    #[command(subcommand)]
    command: AdminCommand,
    /// Config directory (where `keybound login` stored the session)
    #[arg(long, env = "KEYBOUND_CONFIG_DIR", global = true)]
    config_dir: Option<PathBuf>,
}

#[derive(Debug, clap::Subcommand)]
enum AdminCommand {
    /// Create the first admin in the issuer's database (no server needed)
    Bootstrap {
        #[command(flatten)]
        issuer: IssuerArgs,
    },
    /// Domains: create NAME | list | enable NAME | disable NAME
    Domain {
        #[command(subcommand)]
        action: NamedAction,
    },
    /// Projects: create NAME --domain D | list | enable NAME@DOMAIN | disable NAME@DOMAIN
    Project {
        #[command(subcommand)]
        action: ProjectAction,
    },
    /// Users: create NAME@DOMAIN | list | enable | disable | set-password | add-key
    User {
        #[command(subcommand)]
        action: UserAction,
    },
    /// Roles: create NAME | list
    Role {
        #[command(subcommand)]
        action: RoleAction,
    },
    /// Grant ROLE on PROJECT@DOMAIN to USER@DOMAIN (--remote: a user of a peer's domain)
    #[command(after_help = GRANT_EXAMPLES)]
    Grant {
        /// The user, NAME@DOMAIN
        user: String,
        /// A project of this issuer, NAME@DOMAIN
        project: String,
        /// The role
        role: String,
        /// The user is of a domain a peer issuer is authoritative for (federation): the grant is
        /// keyed by that peer and the user, and used when the peer's token is exchanged
        #[arg(long)]
        remote: bool,
    },
    /// Revoke ROLE on PROJECT@DOMAIN from USER@DOMAIN (--remote: a user of a peer's domain)
    #[command(after_help = REVOKE_EXAMPLES)]
    Revoke {
        /// The user, NAME@DOMAIN
        user: String,
        /// A project of this issuer, NAME@DOMAIN
        project: String,
        /// The role
        role: String,
        /// Revoke a grant to a user of a peer's domain; takes effect at the next exchange
        #[arg(long)]
        remote: bool,
    },
    /// List all role assignments (--remote: those of users of peer domains)
    #[command(after_help = "Examples:\n  keybound admin grants\n  keybound admin grants --remote")]
    Grants {
        /// List the grants to users of peer domains instead
        #[arg(long)]
        remote: bool,
    },
    /// Peer issuers of other domains whose tokens this issuer exchanges (federation): add | list | remove
    Peer {
        #[command(subcommand)]
        action: PeerAction,
    },
    /// Services (audiences tokens may be minted for): create AUD | list | delete AUD
    Service {
        #[command(subcommand)]
        action: ServiceAction,
    },
    /// The newest audit-log entries
    Audit {
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
    /// Rotate the signing keys now, or replace a compromised root secret (--emergency)
    #[command(long_about = ROTATE_LONG, after_help = ROTATE_EXAMPLES)]
    Rotate {
        /// Rotate even if verifiers may not have fetched the next key yet (they refuse new tokens until they refetch)
        #[arg(long, conflicts_with = "emergency")]
        force: bool,
        /// Replace the root secret (believed compromised), offline, with the issuer's settings below
        #[arg(long)]
        emergency: bool,
        #[command(flatten)]
        issuer: IssuerArgs,
    },
}

const ROTATE_LONG: &str = "\
Rotate the issuer's signing keys.

Without --emergency: a scheduled rotation, now, through the admin API (your stored admin session). The \
issuer's next key, published a whole period ahead, signs every token from now on (on the replica that \
answers at once, on the others within 5 s); the key it replaces stays published while its tokens live, \
so verifiers with a cached key set refuse nothing. It is refused (issuer.rotation_too_early) while the \
next key has been published for less than the key-set cache max-age plus 10 s, since verifiers that \
fetched the set before may not know it yet; --force rotates anyway, but at most 6 rotations, forced or \
not, are made within one rotation period. The issuer settings below are not used.

With --emergency: the root secret is believed compromised. Run on a host that has the data dir (or the \
database) and the current root secret, with the same settings as `keybound serve` (--config, \
--data-dir, --database-url, --root-secret-file or KEYBOUND_ROOT_SECRET). No server is needed. It \
generates a new secret, records the kids of every old key as retired (never the keys), replaces the \
fingerprint in the database and writes the new secret over the root secret file (32 raw bytes, 0600). \
Running replicas see the new fingerprint within 5 s and stop signing, publishing and accepting the old \
keys (/readyz fails). Then copy the new file to every replica (or set KEYBOUND_ROOT_SECRET to its hex) \
and restart them. Sessions from before answer session.key_replaced: users log in again. Services drop \
the old keys when they fetch the key set from a replica with the new secret (at once on the first \
token under a new key, else when their cached set expires after that); restart them to close that \
window.";
const ROTATE_EXAMPLES: &str = "\
Examples:
  keybound admin rotate
  keybound admin rotate --force
  keybound admin rotate --emergency --data-dir /var/lib/keybound
  keybound admin rotate --emergency --config /etc/keybound/issuer.toml && scp /var/lib/keybound/root.key replica2:/var/lib/keybound/";

#[derive(Debug, clap::Subcommand)]
enum NamedAction {
    Create { name: String },
    List,
    Enable { name: String },
    Disable { name: String },
}

#[derive(Debug, clap::Subcommand)]
enum ProjectAction {
    Create {
        name: String,
        #[arg(long)]
        domain: String,
    },
    List,
    Enable {
        project: String,
    },
    Disable {
        project: String,
    },
}

#[derive(Debug, clap::Subcommand)]
enum UserAction {
    /// Create a user; --password-stdin sets a password, --service marks a service user
    Create {
        user: String,
        #[arg(long)]
        service: bool,
        #[arg(long)]
        password_stdin: bool,
    },
    List,
    Enable {
        user: String,
    },
    Disable {
        user: String,
    },
    /// Set the password from stdin
    SetPassword {
        user: String,
    },
    /// Register a public key (a COSE_Key file, or a private key file whose public half is used)
    AddKey {
        user: String,
        #[arg(long)]
        key: PathBuf,
    },
}

#[derive(Debug, clap::Subcommand)]
enum RoleAction {
    Create { name: String },
    List,
}

const GRANT_EXAMPLES: &str = "\
Examples:
  keybound admin grant ayoung@stoughton turing@stoughton member
  keybound admin grant ayoung@stoughton turing@canton member --remote";
const REVOKE_EXAMPLES: &str = "\
Examples:
  keybound admin revoke ayoung@stoughton turing@stoughton member
  keybound admin revoke ayoung@stoughton turing@canton member --remote";

#[derive(Debug, clap::Subcommand)]
enum PeerAction {
    /// Trust a peer issuer for the domains it is authoritative for (spec/federation.md §2)
    #[command(after_help = "\
Examples:
  keybound admin peer add https://stoughton.example --domain stoughton
  keybound admin peer add https://stoughton.example --domain stoughton --project turing@canton --max-lifetime 120
  keybound admin peer add http://127.0.0.1:8081 --keys-url http://127.0.0.1:8081/.well-known/keybound/keys --domain stoughton")]
    Add {
        /// The peer's issuer id (the `iss` of its tokens)
        issuer: String,
        /// Its key-set URL (https, or http to loopback); default ISSUER/.well-known/keybound/keys
        #[arg(long)]
        keys_url: Option<String>,
        /// A domain the peer is authoritative for (repeat for several; at least one)
        #[arg(long = "domain", required = true)]
        domains: Vec<String>,
        /// A local project its users may reach, NAME@DOMAIN (repeat; default any)
        #[arg(long = "project")]
        projects: Vec<String>,
        /// Longest lifetime of a token exchanged for its users, 1 to 300 s (default the service-token lifetime)
        #[arg(long)]
        max_lifetime: Option<u64>,
    },
    /// List the peers
    #[command(after_help = "Example:\n  keybound admin peer list")]
    List,
    /// Remove a peer, and the roles granted to its users
    #[command(after_help = "Example:\n  keybound admin peer remove https://stoughton.example")]
    Remove {
        /// The peer's issuer id
        issuer: String,
    },
}

#[derive(Debug, clap::Subcommand)]
enum ServiceAction {
    Create { audience: String },
    List,
    Delete { audience: String },
}

/// Local role assignments, or (`--remote`) those of users of peer domains.
fn grants_path(remote: bool) -> String {
    if remote {
        "/v1/admin/remote-grants"
    } else {
        "/v1/admin/grants"
    }
    .to_owned()
}

/// `value` as one URL path segment: everything but unreserved characters and
/// `@` percent-encoded, so a name can never add segments or a query.
fn segment(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'@') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A password from the environment variable `env` (bootstrap only), else a
/// prompt on a terminal, else the first line of stdin.
fn password_from_stdin(what: &str, env: Option<&str>) -> Result<Zeroizing<String>, CliError> {
    if let Some(p) = env.and_then(|name| std::env::var(name).ok()) {
        return Ok(Zeroizing::new(p));
    }
    if std::io::stdin().is_terminal() {
        return rpassword::prompt_password(format!("{what}: "))
            .map(Zeroizing::new)
            .map_err(|e| CliError::io(format!("cannot read the password: {e}")));
    }
    let mut text = Zeroizing::new(String::new());
    std::io::stdin()
        .lock()
        .take(4096)
        .read_to_string(&mut text)
        .map_err(|e| CliError::io(format!("cannot read the password from stdin: {e}")))?;
    Ok(Zeroizing::new(text.lines().next().unwrap_or_default().to_owned()))
}

pub(crate) fn admin(args: AdminArgs) -> Result<ExitCode, CliError> {
    use AdminCommand as C;
    let (method, path, body) = match args.command {
        C::Bootstrap { issuer } => {
            let (config, issuer_id_given) = issuer.resolve_noting_issuer_id()?;
            let password = password_from_stdin("New admin password", Some("KEYBOUND_ADMIN_PASSWORD"))?;
            runtime()?.block_on(crate::issuer::bootstrap(&config, &password))?;
            // The admin audience follows the issuer id `serve` runs with; the
            // database does not record it, so without an issuer id here it is unknown.
            let (issuer_id, admin_audience) = if issuer_id_given {
                (json!(config.issuer_id), json!(config.admin_audience()))
            } else {
                (Value::Null, Value::Null)
            };
            print_stdout(
                &json!({
                    "bootstrapped": true,
                    "admin": "admin@default",
                    "issuer_id": issuer_id,
                    "admin_audience": admin_audience,
                    "admin_audience_rule": "the issuer id `keybound serve` runs with (--issuer-id, default http://LISTEN), followed by /admin",
                    "database": crate::issuer::redact_url(&config.database_url()),
                })
                .to_string(),
            )?;
            return Ok(ExitCode::SUCCESS);
        }
        C::Domain { action } => match action {
            NamedAction::Create { name } => ("POST", "/v1/admin/domains".to_owned(), json!({"name": name})),
            NamedAction::List => ("GET", "/v1/admin/domains".to_owned(), Value::Null),
            NamedAction::Enable { name } => (
                "POST",
                format!("/v1/admin/domains/{}/enable", segment(&name)),
                json!({}),
            ),
            NamedAction::Disable { name } => (
                "POST",
                format!("/v1/admin/domains/{}/disable", segment(&name)),
                json!({}),
            ),
        },
        C::Project { action } => match action {
            ProjectAction::Create { name, domain } => (
                "POST",
                "/v1/admin/projects".to_owned(),
                json!({"name": name, "domain": domain}),
            ),
            ProjectAction::List => ("GET", "/v1/admin/projects".to_owned(), Value::Null),
            ProjectAction::Enable { project } => (
                "POST",
                format!("/v1/admin/projects/{}/enable", segment(&project)),
                json!({}),
            ),
            ProjectAction::Disable { project } => (
                "POST",
                format!("/v1/admin/projects/{}/disable", segment(&project)),
                json!({}),
            ),
        },
        C::User { action } => match action {
            UserAction::Create {
                user,
                service,
                password_stdin,
            } => {
                let mut body = json!({"user": user, "kind": if service { "service" } else { "person" }});
                if password_stdin {
                    body["password"] = json!(*password_from_stdin("Password", None)?);
                }
                ("POST", "/v1/admin/users".to_owned(), body)
            }
            UserAction::List => ("GET", "/v1/admin/users".to_owned(), Value::Null),
            UserAction::Enable { user } => ("POST", format!("/v1/admin/users/{}/enable", segment(&user)), json!({})),
            UserAction::Disable { user } => ("POST", format!("/v1/admin/users/{}/disable", segment(&user)), json!({})),
            UserAction::SetPassword { user } => (
                "PUT",
                format!("/v1/admin/users/{}/password", segment(&user)),
                json!({"password": *password_from_stdin("Password", None)?}),
            ),
            UserAction::AddKey { user, key } => {
                let public = super::input::public_key_arg(&key.display().to_string(), "--key")?;
                (
                    "POST",
                    format!("/v1/admin/users/{}/keys", segment(&user)),
                    json!({"key": crate::encoding::b64url_encode(&public.to_cose_key(None))}),
                )
            }
        },
        C::Role { action } => match action {
            RoleAction::Create { name } => ("POST", "/v1/admin/roles".to_owned(), json!({"name": name})),
            RoleAction::List => ("GET", "/v1/admin/roles".to_owned(), Value::Null),
        },
        C::Grant {
            user,
            project,
            role,
            remote,
        } => (
            "POST",
            grants_path(remote),
            json!({"user": user, "project": project, "role": role}),
        ),
        C::Revoke {
            user,
            project,
            role,
            remote,
        } => (
            "DELETE",
            grants_path(remote),
            json!({"user": user, "project": project, "role": role}),
        ),
        C::Grants { remote } => ("GET", grants_path(remote), Value::Null),
        C::Peer { action } => match action {
            PeerAction::Add {
                issuer,
                keys_url,
                domains,
                projects,
                max_lifetime,
            } => {
                let keys_url =
                    keys_url.unwrap_or_else(|| format!("{}/.well-known/keybound/keys", issuer.trim_end_matches('/')));
                let mut body =
                    json!({"issuer": issuer, "keys_url": keys_url, "domains": domains, "projects": projects});
                if let Some(seconds) = max_lifetime {
                    body["max_lifetime"] = json!(seconds);
                }
                ("POST", "/v1/admin/peers".to_owned(), body)
            }
            PeerAction::List => ("GET", "/v1/admin/peers".to_owned(), Value::Null),
            PeerAction::Remove { issuer } => ("DELETE", "/v1/admin/peers".to_owned(), json!({"issuer": issuer})),
        },
        C::Service { action } => match action {
            ServiceAction::Create { audience } => {
                ("POST", "/v1/admin/services".to_owned(), json!({"audience": audience}))
            }
            ServiceAction::List => ("GET", "/v1/admin/services".to_owned(), Value::Null),
            ServiceAction::Delete { audience } => {
                ("DELETE", "/v1/admin/services".to_owned(), json!({"audience": audience}))
            }
        },
        C::Audit { limit } => ("GET", format!("/v1/admin/audit?limit={limit}"), Value::Null),
        C::Rotate {
            force,
            emergency: false,
            issuer: _,
        } => ("POST", "/v1/admin/keys/rotate".to_owned(), json!({"force": force})),
        C::Rotate {
            emergency: true,
            issuer,
            ..
        } => {
            let config = issuer.resolve()?;
            let from_environment = config.root_secret.is_some();
            let done = runtime()?.block_on(crate::issuer::replace_root_secret(&config))?;
            let file = done.root_secret_file.display().to_string();
            let mut next = format!(
                "copy {file} (32 raw bytes, mode 0600) to every replica's root secret file and restart every replica; \
                 until then they refuse to sign; then restart every service (services keep accepting the old keys \
                 until they fetch the key set from a replica with the new secret)"
            );
            if from_environment {
                next.push_str(&format!(
                    "; KEYBOUND_ROOT_SECRET holds the old secret: set it to the new one (xxd -p -c 64 {file}) or unset it"
                ));
            }
            print_stdout(
                &serde_json::to_string_pretty(&json!({
                    "replaced": true,
                    "fingerprint": done.fingerprint,
                    "previous_fingerprint": done.previous_fingerprint,
                    "root_secret_file": file,
                    "retired_kids": done.retired_kids,
                    "database": crate::issuer::redact_url(&config.database_url()),
                    "next": next,
                }))
                .unwrap_or_default(),
            )?;
            return Ok(ExitCode::SUCCESS);
        }
    };
    let dir = session::config_dir(args.config_dir.as_deref())?;
    let client = session::client(&dir)?;
    let scope = Scope::new(format!("{}/admin", client.issuer()))
        .project("admin")
        .domain("default");
    let url = format!("{}{path}", client.issuer());
    let answer = runtime()?.block_on(async {
        let mut request = client.request(method.parse().unwrap_or(reqwest::Method::GET), &url, &scope);
        if !body.is_null() {
            request = request.json(&body);
        }
        let response = request.send().await?;
        if !response.status().is_success() {
            return Err(error_from_response(response).await);
        }
        let bytes = response
            .bytes()
            .await
            .map_err(|e| Error::new(Code::ClientUnreachable, format!("reading the answer: {e}")))?;
        serde_json::from_slice::<Value>(&bytes)
            .map_err(|e| Error::new(Code::ClientRefused, format!("the answer is not JSON: {e}")))
    });
    match answer {
        Ok(value) => {
            print_stdout(&serde_json::to_string_pretty(&value).unwrap_or_default())?;
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => Err(CliError::with_exit(e, EXIT_FAILURE)),
    }
}
