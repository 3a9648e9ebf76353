//! `keybound admin …`: bootstrap and emergency rotation on the database, every
//! other command through the issuer's admin API with the stored session.

use std::io::{IsTerminal, Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use serde_json::{Value, json};
use zeroize::Zeroizing;

use super::session::{self, runtime};
use super::{CliError, EXIT_FAILURE, EXIT_USAGE, print_stdout};
use crate::client::{Client, Scope, error_from_response};
use crate::error::{Code, Error};

use super::server_cmds::IssuerArgs;

// The admin commands' rendering lives beside them (src/cli/output.rs).
#[path = "output.rs"]
mod output;

use output::Format;

pub(crate) const ADMIN_ABOUT: &str =
    "Administer the issuer: bootstrap, domains, projects, users, roles, grants, services, audit, key rotation";
pub(crate) const ADMIN_LONG: &str = "\
Administer the issuer.

`keybound admin bootstrap` creates the first admin (admin@default) directly in the issuer's database, \
with a password from stdin or KEYBOUND_ADMIN_PASSWORD; there is no default password. `keybound admin \
rotate --emergency` (replacing a compromised root secret) also works on the database directly. Every other admin \
command calls the issuer's admin API with your stored session (log in as admin@default first): it gets \
an admin token for project admin@default and signs the request with your key. Every admin action is \
written to the issuer's audit log.

Answers are printed as --output table (aligned columns, times in ISO 8601 UTC), json (the issuer's JSON, \
times in Unix seconds) or value (bare values, one row per line, for scripts); the default is table when \
stdout is a terminal and json otherwise, so scripts that read the JSON keep working. --column picks the \
columns of table and value. bootstrap, rotate --emergency and audit export always print JSON.

Deletes: a domain only when it has no projects and no users, a role only when nothing grants or \
delegates it (issuer.in_use otherwise); a project takes its grants and trusts with it, a user its grants, \
keys and trusts. The bootstrap's domain default, project and user admin@default and role admin cannot be \
deleted (issuer.protected). Creating what exists is refused with issuer.conflict.";
pub(crate) const ADMIN_EXAMPLES: &str = "\
Examples:
  keybound admin bootstrap --data-dir ./keybound-data < admin-password.txt
  keybound login --issuer http://127.0.0.1:8080 --user admin@default
  keybound admin domain create stoughton
  keybound admin project create turing --domain stoughton
  keybound admin user create ayoung@stoughton --password-stdin
  keybound admin role create member
  keybound admin grant ayoung@stoughton turing@stoughton member
  keybound admin user show ayoung@stoughton
  keybound admin grants --user ayoung@stoughton --output table
  keybound admin audit --actor admin@default --limit 20
  keybound admin audit export > audit.jsonl
  keybound admin rotate";

/// `keybound admin`.
#[derive(Debug, clap::Args)]
pub(crate) struct AdminArgs {
    #[command(subcommand)]
    command: AdminCommand,
    /// Config directory (where `keybound login` stored the session)
    #[arg(long, env = "KEYBOUND_CONFIG_DIR", global = true)]
    config_dir: Option<PathBuf>,
    /// How to print answers: table, json or value (default: table on a terminal, json otherwise)
    #[arg(long, short = 'o', value_enum, env = "KEYBOUND_OUTPUT", global = true)]
    output: Option<Format>,
    /// Only this column of table and value output (repeat for several, in that order)
    #[arg(long = "column", short = 'c', value_name = "NAME", global = true)]
    columns: Vec<String>,
}

#[derive(Debug, clap::Subcommand)]
enum AdminCommand {
    /// Create the first admin in the issuer's database (no server needed)
    #[command(after_help = BOOTSTRAP_EXAMPLES)]
    Bootstrap {
        #[command(flatten)]
        issuer: IssuerArgs,
    },
    /// Domains: create, list, enable, disable, delete
    #[command(after_help = "Examples:\n  keybound admin domain create stoughton\n  keybound admin domain list")]
    Domain {
        #[command(subcommand)]
        action: DomainAction,
    },
    /// Projects: create, list, enable, disable, delete
    #[command(
        after_help = "Examples:\n  keybound admin project create turing --domain stoughton\n  keybound admin project list"
    )]
    Project {
        #[command(subcommand)]
        action: ProjectAction,
    },
    /// Users: create, list, show, enable, disable, delete, passwords, lockouts, keys
    #[command(
        after_help = "Examples:\n  keybound admin user create ayoung@stoughton --password-stdin\n  keybound admin user show ayoung@stoughton"
    )]
    User {
        #[command(subcommand)]
        action: UserAction,
    },
    /// Roles: create, list, delete
    #[command(after_help = "Examples:\n  keybound admin role create member\n  keybound admin role list")]
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
    /// List role assignments, all or filtered (--remote: those of users of peer domains)
    #[command(after_help = GRANTS_EXAMPLES)]
    Grants {
        /// Only the grants of this user, NAME@DOMAIN
        #[arg(long, conflicts_with = "remote")]
        user: Option<String>,
        /// Only the grants on this project, NAME@DOMAIN
        #[arg(long, conflicts_with = "remote")]
        project: Option<String>,
        /// Only the grants of this role
        #[arg(long, conflicts_with = "remote")]
        role: Option<String>,
        /// List the grants to users of peer domains instead (no filters)
        #[arg(long)]
        remote: bool,
    },
    /// Peer issuers of other domains whose tokens this issuer exchanges (federation): add, list, remove
    #[command(
        after_help = "Examples:\n  keybound admin peer list\n  keybound admin peer remove https://stoughton.example"
    )]
    Peer {
        #[command(subcommand)]
        action: PeerAction,
    },
    /// Services (audiences tokens may be minted for): create, list, delete
    #[command(
        after_help = "Examples:\n  keybound admin service create https://nova.example\n  keybound admin service list"
    )]
    Service {
        #[command(subcommand)]
        action: ServiceAction,
    },
    /// The audit log: a page of entries, newest first (the default), or an export of all of them
    #[command(long_about = AUDIT_LONG, after_help = AUDIT_EXAMPLES, args_conflicts_with_subcommands = true)]
    Audit {
        #[command(subcommand)]
        command: Option<AuditCommand>,
        #[command(flatten)]
        list: AuditListArgs,
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

const BOOTSTRAP_EXAMPLES: &str = "\
Examples:
  keybound admin bootstrap --data-dir ./keybound-data
  keybound admin bootstrap --config issuer.toml < admin-password.txt";

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
  keybound admin rotate --emergency --config /etc/keybound/issuer.toml";

const AUDIT_LONG: &str = "\
The issuer's audit log, newest first.

Without a subcommand (or with `list`): one page of at most --limit entries (1 to 1000); the next page is \
--before the smallest id shown. `export` writes every entry the filters select as JSON lines (one entry \
per line, newest first), fetching 1000 at a time, so its memory stays bounded whatever the log's size. \
Filters match exactly: --actor, --action, --target, and --since/--until (inclusive) as Unix seconds or \
UTC times (2026-12-02T04:23:46Z, or a date). Each entry names its client address and the thumbprint of \
the key its request was bound to; a token.mint entry stands for `count` mints of one user with one key \
for one audience in one minute.";
const AUDIT_EXAMPLES: &str = "\
Examples:
  keybound admin audit --limit 20
  keybound admin audit --action user.delete --since 2026-12-01
  keybound admin audit --before 1200 --output table
  keybound admin audit export > audit.jsonl
  keybound admin audit export --actor ayoung@stoughton --action token.mint";

const GRANT_EXAMPLES: &str = "\
Examples:
  keybound admin grant ayoung@stoughton turing@stoughton member
  keybound admin grant ayoung@stoughton turing@canton member --remote";
const REVOKE_EXAMPLES: &str = "\
Examples:
  keybound admin revoke ayoung@stoughton turing@stoughton member
  keybound admin revoke ayoung@stoughton turing@canton member --remote";
const GRANTS_EXAMPLES: &str = "\
Examples:
  keybound admin grants
  keybound admin grants --user ayoung@stoughton
  keybound admin grants --role member -o value -c user
  keybound admin grants --remote";

#[derive(Debug, clap::Subcommand)]
enum DomainAction {
    /// Create a domain
    #[command(after_help = "Examples:\n  keybound admin domain create stoughton")]
    Create {
        /// The domain's name
        name: String,
    },
    /// List the domains
    #[command(after_help = "Examples:\n  keybound admin domain list\n  keybound admin domain list -o value -c name")]
    List,
    /// Enable a domain (its users and projects may log in and mint again)
    #[command(after_help = "Examples:\n  keybound admin domain enable stoughton")]
    Enable {
        /// The domain's name
        name: String,
    },
    /// Disable a domain: its users and projects can neither log in nor mint
    #[command(after_help = "Examples:\n  keybound admin domain disable stoughton")]
    Disable {
        /// The domain's name
        name: String,
    },
    /// Delete a domain that has no projects and no users (issuer.in_use otherwise)
    #[command(after_help = "Examples:\n  keybound admin domain delete stoughton")]
    Delete {
        /// The domain's name
        name: String,
    },
}

#[derive(Debug, clap::Subcommand)]
enum ProjectAction {
    /// Create a project in an existing domain
    #[command(after_help = "Examples:\n  keybound admin project create turing --domain stoughton")]
    Create {
        /// The project's name (without the domain)
        name: String,
        /// The domain it belongs to
        #[arg(long)]
        domain: String,
    },
    /// List the projects
    #[command(after_help = "Examples:\n  keybound admin project list\n  keybound admin project list --output table")]
    List,
    /// Enable a project
    #[command(after_help = "Examples:\n  keybound admin project enable turing@stoughton")]
    Enable {
        /// The project, NAME@DOMAIN
        project: String,
    },
    /// Disable a project: no token is minted for it
    #[command(after_help = "Examples:\n  keybound admin project disable turing@stoughton")]
    Disable {
        /// The project, NAME@DOMAIN
        project: String,
    },
    /// Delete a project with its role assignments and the trusts on it
    #[command(after_help = "Examples:\n  keybound admin project delete turing@stoughton")]
    Delete {
        /// The project, NAME@DOMAIN
        project: String,
    },
}

#[derive(Debug, clap::Subcommand)]
enum UserAction {
    /// Create a user; --password-stdin sets a password, --service marks a service user
    #[command(after_help = "\
Examples:
  keybound admin user create ayoung@stoughton --password-stdin < password.txt
  keybound admin user create nova-compute@stoughton --service")]
    Create {
        /// The user, NAME@DOMAIN
        user: String,
        /// A service user (kind service) rather than a person
        #[arg(long)]
        service: bool,
        /// Read the password from the first line of stdin (or a prompt on a terminal)
        #[arg(long)]
        password_stdin: bool,
    },
    /// List the users
    #[command(after_help = "Examples:\n  keybound admin user list\n  keybound admin user list -o value -c user")]
    List,
    /// Show a user: flags, grants, registered keys and lockout state
    #[command(
        after_help = "Examples:\n  keybound admin user show ayoung@stoughton\n  keybound admin user show ayoung@stoughton -o json"
    )]
    Show {
        /// The user, NAME@DOMAIN
        user: String,
    },
    /// Enable a user
    #[command(after_help = "Examples:\n  keybound admin user enable ayoung@stoughton")]
    Enable {
        /// The user, NAME@DOMAIN
        user: String,
    },
    /// Disable a user: it can neither log in nor mint, at once
    #[command(after_help = "Examples:\n  keybound admin user disable ayoung@stoughton")]
    Disable {
        /// The user, NAME@DOMAIN
        user: String,
    },
    /// Delete a user with its grants, registered keys and trusts
    #[command(after_help = "Examples:\n  keybound admin user delete ayoung@stoughton")]
    Delete {
        /// The user, NAME@DOMAIN
        user: String,
    },
    /// Set the password from stdin (also ends a lockout)
    #[command(after_help = "Examples:\n  keybound admin user set-password ayoung@stoughton < password.txt")]
    SetPassword {
        /// The user, NAME@DOMAIN
        user: String,
    },
    /// End a lockout after failed password logins, without changing the password
    #[command(after_help = "Examples:\n  keybound admin user unlock ayoung@stoughton")]
    Unlock {
        /// The user, NAME@DOMAIN
        user: String,
    },
    /// Register a public key for key login (a COSE_Key file, or a private key file whose public half is used)
    #[command(after_help = "Examples:\n  keybound admin user add-key nova-compute@stoughton --key nova.cbor")]
    AddKey {
        /// The user, NAME@DOMAIN
        user: String,
        /// The key file
        #[arg(long)]
        key: PathBuf,
    },
    /// List the keys registered for a user's key login (thumbprints, when added)
    #[command(after_help = "Examples:\n  keybound admin user keys nova-compute@stoughton")]
    Keys {
        /// The user, NAME@DOMAIN
        user: String,
    },
    /// Remove a registered key: key login with it stops, and so do sessions bound to it
    #[command(long_about = REMOVE_KEY_LONG, after_help = REMOVE_KEY_EXAMPLES)]
    RemoveKey {
        /// The user, NAME@DOMAIN
        user: String,
        /// The key's thumbprint, as `user keys` lists it (base64url, 43 characters)
        thumbprint: String,
    },
}

const REMOVE_KEY_LONG: &str = "\
Remove a key registered for a user, for example a compromised client key.

Key login with the key stops at once. Every session bound to the key that began before the removal \
(or up to the issuer's clock leeway after it) mints nothing more (issuer.key_removed), and admin tokens \
bound to it are refused (issuer.forbidden); \
service tokens already minted with it live out their lifetime (at most 300 s). Sessions bound to other \
keys, and password logins, are not affected.";
const REMOVE_KEY_EXAMPLES: &str = "\
Examples:
  keybound admin user keys nova-compute@stoughton -o value -c thumbprint
  keybound admin user remove-key nova-compute@stoughton \"$THUMBPRINT\"";

#[derive(Debug, clap::Subcommand)]
enum RoleAction {
    /// Create a role
    #[command(after_help = "Examples:\n  keybound admin role create member")]
    Create {
        /// The role's name
        name: String,
    },
    /// List the roles
    #[command(after_help = "Examples:\n  keybound admin role list")]
    List,
    /// Delete a role that nothing grants or delegates (issuer.in_use otherwise)
    #[command(after_help = "Examples:\n  keybound admin role delete member")]
    Delete {
        /// The role's name
        name: String,
    },
}

#[derive(Debug, clap::Subcommand)]
enum PeerAction {
    /// Trust a peer issuer for the domains it is authoritative for (spec/federation.md §2)
    #[command(after_help = "\
Examples:
  keybound admin peer add https://stoughton.example --domain stoughton
  keybound admin peer add https://hyde.example --domain hyde --max-lifetime 60
  keybound admin peer add https://hyde.example --domain hyde --project app@hq")]
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
    #[command(after_help = "Examples:\n  keybound admin peer list")]
    List,
    /// Remove a peer, and the roles granted to its users
    #[command(after_help = "Examples:\n  keybound admin peer remove https://stoughton.example")]
    Remove {
        /// The peer's issuer id
        issuer: String,
    },
}

#[derive(Debug, clap::Subcommand)]
enum ServiceAction {
    /// Register a service audience (tokens may then be minted for it)
    #[command(after_help = "Examples:\n  keybound admin service create https://nova.example")]
    Create {
        /// The audience, as its verifier knows itself (usually its base URL)
        audience: String,
    },
    /// List the registered service audiences
    #[command(after_help = "Examples:\n  keybound admin service list")]
    List,
    /// Remove a service audience: no more tokens for it
    #[command(after_help = "Examples:\n  keybound admin service delete https://nova.example")]
    Delete {
        /// The audience
        audience: String,
    },
}

#[derive(Debug, clap::Subcommand)]
enum AuditCommand {
    /// One page of audit entries, newest first (what `keybound admin audit` does)
    #[command(after_help = "\
Examples:
  keybound admin audit list --limit 100
  keybound admin audit list --before 1200 --target ayoung@stoughton")]
    List(AuditListArgs),
    /// Every audit entry the filters select, as JSON lines on stdout, newest first
    #[command(after_help = "\
Examples:
  keybound admin audit export > audit.jsonl
  keybound admin audit export --since 2026-12-01 --until 2026-12-02 | wc -l")]
    Export(AuditFilter),
}

/// Which entries of the audit log.
#[derive(Debug, Default, clap::Args)]
struct AuditFilter {
    /// Only entries of this actor (NAME@DOMAIN, `-` for none)
    #[arg(long)]
    actor: Option<String>,
    /// Only entries of this action (login, user.delete, token.mint, …)
    #[arg(long)]
    action: Option<String>,
    /// Only entries of this target
    #[arg(long)]
    target: Option<String>,
    /// Only entries at or after this time: Unix seconds or UTC (2026-12-02T04:23:46Z, or a date)
    #[arg(long, value_parser = output::parse_time)]
    since: Option<i64>,
    /// Only entries at or before this time: Unix seconds or UTC (2026-12-02T04:23:46Z, or a date)
    #[arg(long, value_parser = output::parse_time)]
    until: Option<i64>,
}

/// One page of the audit log.
#[derive(Debug, Default, clap::Args)]
struct AuditListArgs {
    /// How many entries, 1 to 1000
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=1000))]
    limit: u32,
    /// Only entries with a smaller id: the next page after one whose last id this is
    #[arg(long)]
    before: Option<i64>,
    #[command(flatten)]
    filter: AuditFilter,
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

/// `?name=value&…` of the parameters that are given, each value encoded as
/// [`segment`] encodes (so `&`, `=`, `+` and spaces stay inside it).
fn query(params: &[(&str, Option<String>)]) -> String {
    let given: Vec<String> = params
        .iter()
        .filter_map(|(name, value)| value.as_ref().map(|v| format!("{name}={}", segment(v))))
        .collect();
    if given.is_empty() {
        String::new()
    } else {
        format!("?{}", given.join("&"))
    }
}

impl AuditFilter {
    fn params(&self) -> Vec<(&'static str, Option<String>)> {
        vec![
            ("actor", self.actor.clone()),
            ("action", self.action.clone()),
            ("target", self.target.clone()),
            ("since", self.since.map(|t| t.to_string())),
            ("until", self.until.map(|t| t.to_string())),
        ]
    }
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

/// One admin API call and its JSON answer.
async fn call(client: &Client, scope: &Scope, method: &str, path: &str, body: &Value) -> Result<Value, Error> {
    let url = format!("{}{path}", client.issuer());
    let mut request = client.request(method.parse().unwrap_or(reqwest::Method::GET), &url, scope);
    if !body.is_null() {
        request = request.json(body);
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
}

/// The most entries an export asks for at once (the issuer's page limit).
const EXPORT_PAGE: usize = 1000;

/// `keybound admin audit export`: every page, newest first, one JSON line
/// per entry, written as each page arrives.
fn export(client: &Client, scope: &Scope, filter: &AuditFilter) -> Result<ExitCode, CliError> {
    let rt = runtime()?;
    let mut out = std::io::stdout().lock();
    let mut before: Option<i64> = None;
    loop {
        let mut params = vec![
            ("limit", Some(EXPORT_PAGE.to_string())),
            ("before", before.map(|id| id.to_string())),
        ];
        params.extend(filter.params());
        let path = format!("/v1/admin/audit{}", query(&params));
        let page = rt
            .block_on(call(client, scope, "GET", &path, &Value::Null))
            .map_err(|e| CliError::with_exit(e, EXIT_FAILURE))?;
        let entries = page
            .as_array()
            .ok_or_else(|| CliError::from(Error::new(Code::ClientRefused, "an audit page is not a JSON array")))?;
        let mut lines = String::new();
        for entry in entries {
            lines.push_str(&entry.to_string());
            lines.push('\n');
        }
        match out.write_all(lines.as_bytes()).and_then(|()| out.flush()) {
            Ok(()) => {}
            // `keybound admin audit export | head`: done.
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => return Ok(ExitCode::SUCCESS),
            Err(e) => return Err(CliError::io(format!("cannot write to stdout: {e}"))),
        }
        let last = entries.last().and_then(|e| e["id"].as_i64());
        match last {
            Some(id) if entries.len() == EXPORT_PAGE => {
                // Ids only decrease from page to page: the export ends.
                if before.is_some_and(|b| id >= b) {
                    return Err(CliError::from(Error::new(
                        Code::ClientRefused,
                        "the issuer answered an audit page that does not go back in ids",
                    )));
                }
                before = Some(id);
            }
            _ => return Ok(ExitCode::SUCCESS),
        }
    }
}

pub(crate) fn admin(args: AdminArgs) -> Result<ExitCode, CliError> {
    use AdminCommand as C;
    let format = Format::or_default(args.output);
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
            DomainAction::Create { name } => ("POST", "/v1/admin/domains".to_owned(), json!({"name": name})),
            DomainAction::List => ("GET", "/v1/admin/domains".to_owned(), Value::Null),
            DomainAction::Enable { name } => (
                "POST",
                format!("/v1/admin/domains/{}/enable", segment(&name)),
                json!({}),
            ),
            DomainAction::Disable { name } => (
                "POST",
                format!("/v1/admin/domains/{}/disable", segment(&name)),
                json!({}),
            ),
            DomainAction::Delete { name } => ("DELETE", format!("/v1/admin/domains/{}", segment(&name)), json!({})),
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
            ProjectAction::Delete { project } => {
                ("DELETE", format!("/v1/admin/projects/{}", segment(&project)), json!({}))
            }
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
            UserAction::Show { user } => ("GET", format!("/v1/admin/users/{}", segment(&user)), Value::Null),
            UserAction::Enable { user } => ("POST", format!("/v1/admin/users/{}/enable", segment(&user)), json!({})),
            UserAction::Disable { user } => ("POST", format!("/v1/admin/users/{}/disable", segment(&user)), json!({})),
            UserAction::Delete { user } => ("DELETE", format!("/v1/admin/users/{}", segment(&user)), json!({})),
            UserAction::SetPassword { user } => (
                "PUT",
                format!("/v1/admin/users/{}/password", segment(&user)),
                json!({"password": *password_from_stdin("Password", None)?}),
            ),
            UserAction::Unlock { user } => ("POST", format!("/v1/admin/users/{}/unlock", segment(&user)), json!({})),
            UserAction::AddKey { user, key } => {
                let public = super::input::public_key_arg(&key.display().to_string(), "--key")?;
                (
                    "POST",
                    format!("/v1/admin/users/{}/keys", segment(&user)),
                    json!({"key": crate::encoding::b64url_encode(&public.to_cose_key(None))}),
                )
            }
            UserAction::Keys { user } => ("GET", format!("/v1/admin/users/{}/keys", segment(&user)), Value::Null),
            UserAction::RemoveKey { user, thumbprint } => (
                "DELETE",
                format!("/v1/admin/users/{}/keys/{}", segment(&user), segment(&thumbprint)),
                json!({}),
            ),
        },
        C::Role { action } => match action {
            RoleAction::Create { name } => ("POST", "/v1/admin/roles".to_owned(), json!({"name": name})),
            RoleAction::List => ("GET", "/v1/admin/roles".to_owned(), Value::Null),
            RoleAction::Delete { name } => ("DELETE", format!("/v1/admin/roles/{}", segment(&name)), json!({})),
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
        C::Grants {
            user,
            project,
            role,
            remote,
        } => (
            "GET",
            format!(
                "{}{}",
                grants_path(remote),
                query(&[("user", user), ("project", project), ("role", role)])
            ),
            Value::Null,
        ),
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
        C::Audit {
            command: Some(AuditCommand::Export(filter)),
            ..
        } => {
            let dir = session::config_dir(args.config_dir.as_deref())?;
            let client = session::client(&dir)?;
            return export(&client, &admin_scope(&client), &filter);
        }
        C::Audit {
            command: Some(AuditCommand::List(list)),
            ..
        }
        | C::Audit { command: None, list } => {
            let mut params = vec![
                ("limit", Some(list.limit.to_string())),
                ("before", list.before.map(|id| id.to_string())),
            ];
            params.extend(list.filter.params());
            ("GET", format!("/v1/admin/audit{}", query(&params)), Value::Null)
        }
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
    let scope = admin_scope(&client);
    let answer = runtime()?
        .block_on(call(&client, &scope, method, &path, &body))
        .map_err(|e| CliError::with_exit(e, EXIT_FAILURE))?;
    let text = output::render(&answer, format, &args.columns)
        .map_err(|message| CliError::new(super::CODE_USAGE, message, EXIT_USAGE))?;
    // Nothing to show (an empty list as values) prints no line at all.
    if !text.is_empty() {
        print_stdout(&text)?;
    }
    Ok(ExitCode::SUCCESS)
}

/// The scope of admin tokens: the admin audience, project admin@default.
fn admin_scope(client: &Client) -> Scope {
    Scope::new(format!("{}/admin", client.issuer()))
        .project("admin")
        .domain("default")
}
