//! `keybound login`, `keybound token` and `keybound request`: the client side.

use std::io::{IsTerminal, Read};
use std::path::PathBuf;
use std::process::ExitCode;

use serde_json::json;
use zeroize::Zeroizing;

use super::render;
use super::session::{self, runtime};
use super::{CliError, EXIT_FAILURE, print_stdout};
use crate::client::{Client, Scope, error_from_response};
use crate::error::{Code, Error};

pub(crate) const LOGIN_ABOUT: &str = "Log in to an issuer and store the session (bound to your key)";
pub(crate) const LOGIN_LONG: &str = "\
Log in to an issuer and store the session.

The login request carries a proof made with your client key, so the session token the issuer returns is \
bound to that key: it is useless to anyone without the key. The password comes from --password-stdin, \
from the KEYBOUND_PASSWORD environment variable, or from a prompt; with --key-login no password is sent \
and the issuer checks that your key is registered for the user.

The client key defaults to key.cbor in the config directory (generated on first use); the session is \
stored as session.json there, mode 0600. The config directory is $KEYBOUND_CONFIG_DIR, else \
$XDG_CONFIG_HOME/keybound, else ~/.config/keybound.";
pub(crate) const LOGIN_EXAMPLES: &str = "\
Examples:
  keybound login --issuer http://127.0.0.1:8080 --user ayoung@stoughton
  echo \"$PW\" | keybound login --issuer https://issuer.example --user ayoung@stoughton --password-stdin
  keybound login --issuer https://issuer.example --user nova-compute@service --key-login --key svc.key";

/// `keybound login`.
#[derive(Debug, clap::Args)]
pub(crate) struct LoginArgs {
    /// Issuer URL (its issuer id)
    #[arg(long, env = "KEYBOUND_ISSUER")]
    issuer: String,
    /// User as name@domain (a bare name means domain "default")
    #[arg(long)]
    user: String,
    /// Read the password from the first line of stdin
    #[arg(long)]
    password_stdin: bool,
    /// Log in with a registered key instead of a password
    #[arg(long, conflicts_with = "password_stdin")]
    key_login: bool,
    /// Client key file (default: key.cbor in the config directory)
    #[arg(long)]
    key: Option<PathBuf>,
    /// Session lifetime in seconds (default: the issuer's)
    #[arg(long)]
    lifetime: Option<u64>,
    /// Config directory
    #[arg(long, env = "KEYBOUND_CONFIG_DIR")]
    config_dir: Option<PathBuf>,
    /// Print the result as JSON
    #[arg(long)]
    json: bool,
}

fn read_password(from_stdin: bool) -> Result<Zeroizing<String>, CliError> {
    if from_stdin {
        let mut line = Zeroizing::new(String::new());
        std::io::stdin()
            .lock()
            .take(4096)
            .read_to_string(&mut line)
            .map_err(|e| CliError::io(format!("cannot read the password from stdin: {e}")))?;
        let password = line.lines().next().unwrap_or_default().to_owned();
        return Ok(Zeroizing::new(password));
    }
    if let Ok(password) = std::env::var("KEYBOUND_PASSWORD") {
        return Ok(Zeroizing::new(password));
    }
    if !std::io::stdin().is_terminal() {
        return Err(CliError::usage(
            "no password: use --password-stdin, KEYBOUND_PASSWORD, a terminal, or --key-login",
        ));
    }
    rpassword::prompt_password("Password: ")
        .map(Zeroizing::new)
        .map_err(|e| CliError::io(format!("cannot read the password: {e}")))
}

pub(crate) fn login(args: LoginArgs) -> Result<ExitCode, CliError> {
    let dir = session::config_dir(args.config_dir.as_deref())?;
    let key_file = args.key.clone().unwrap_or_else(|| dir.join("key.cbor"));
    let key = session::load_or_create_key(&key_file)?;
    let user = if args.user.contains('@') {
        args.user.clone()
    } else {
        format!("{}@default", args.user)
    };
    let password = if args.key_login {
        None
    } else {
        Some(read_password(args.password_stdin)?)
    };
    let client = Client::new(&args.issuer, key)?;
    let session = runtime()?.block_on(async {
        match &password {
            Some(password) => client.login_password(&user, password, args.lifetime).await,
            None => client.login_key(&user, args.lifetime).await,
        }
    })?;
    session::store_login(&dir, &client, &key_file, &session)?;
    if args.json {
        print_stdout(&json!({"subject": session.subject, "expires_at": session.expires_at, "issuer": client.issuer(), "key_thumbprint": client.key().public_key().thumbprint().to_string()}).to_string())?;
    } else {
        print_stdout(&format!(
            "logged in to {} as {} until {} (key {})",
            client.issuer(),
            session.subject,
            session.expires_at,
            client.key().public_key().thumbprint()
        ))?;
    }
    Ok(ExitCode::SUCCESS)
}

/// Options that choose a token's scope.
#[derive(Debug, clap::Args)]
pub(crate) struct ScopeArgs {
    /// The service's audience
    #[arg(long)]
    audience: String,
    /// Project to scope the token to
    #[arg(long)]
    project: Option<String>,
    /// Domain of the project (default: yours)
    #[arg(long)]
    domain: Option<String>,
    /// Only these roles, comma-separated (default: all you hold)
    #[arg(long, value_delimiter = ',')]
    roles: Vec<String>,
    /// Token lifetime in seconds (at most 300)
    #[arg(long)]
    lifetime: Option<u64>,
    /// Mint from this trust (you are its trustee): a delegated token for the trustor, on the trust's project
    #[arg(long, conflicts_with_all = ["project", "domain"])]
    trust: Option<String>,
    /// Get the token from this peer issuer (federation): your issuer mints a token for it, which it
    /// exchanges for one of its own; --project and --domain then name the peer's project
    #[arg(long, conflicts_with = "trust", requires_all = ["project", "domain"])]
    through: Option<String>,
    /// Restrict the token to one instance of the service (a VM or host id, 1 to 255 visible ASCII
    /// characters): only a service configured with that instance id accepts it
    #[arg(long, value_name = "ID")]
    instance: Option<String>,
}

impl ScopeArgs {
    fn scope(&self) -> Scope {
        let mut scope = Scope::new(&self.audience);
        scope.project = self.project.clone();
        scope.domain = self.domain.clone();
        scope.roles = (!self.roles.is_empty()).then(|| self.roles.clone());
        scope.lifetime = self.lifetime;
        scope.trust = self.trust.clone();
        scope.through = self.through.clone();
        scope.instance = self.instance.clone();
        scope
    }
}

pub(crate) const TOKEN_ABOUT: &str = "Print a service token for one audience (needs a login)";
pub(crate) const TOKEN_LONG: &str = "\
Print a service token for one audience.

Uses the stored session to ask the issuer for a token scoped to one service (and optionally one project \
and a subset of your roles). The token is printed in base64url, as it goes into `Authorization: KB …`. \
It is bound to your key: it works only together with proofs signed by that key (see `keybound request`). \
With --instance ID the token is also restricted to one instance of the service (a VM or a host id): a \
service configured with another instance id, or with none, refuses it (cwt.instance).";
pub(crate) const TOKEN_EXAMPLES: &str = "\
Examples:
  keybound token --audience https://nova.example --project turing
  keybound token --audience https://nova.example --project turing --roles reader --lifetime 60 --json
  keybound token --audience https://nova.example --trust 2Qf3mV0cZ8bq1Xo4yT6wUg --json
  keybound token --audience https://nova.canton.example --through https://canton.example --project turing --domain canton
  keybound token --audience https://nova.example --project turing --instance vm-7f3a@host-12";

/// `keybound token`.
#[derive(Debug, clap::Args)]
pub(crate) struct TokenArgs {
    #[command(flatten)]
    scope: ScopeArgs,
    /// Config directory
    #[arg(long, env = "KEYBOUND_CONFIG_DIR")]
    config_dir: Option<PathBuf>,
    /// Print a JSON object with the token and its claims
    #[arg(long)]
    json: bool,
}

pub(crate) fn token(args: TokenArgs) -> Result<ExitCode, CliError> {
    let dir = session::config_dir(args.config_dir.as_deref())?;
    let client = session::client(&dir)?;
    let token = runtime()?.block_on(client.service_token(&args.scope.scope()))?;
    if args.json {
        let claims = crate::danger::insecure_decode_token(token.as_bytes())?.claims;
        print_stdout(
            &json!({
                "token": token.to_base64url(),
                "audience": claims.aud, "subject": claims.sub, "project": claims.project, "domain": claims.domain,
                "roles": claims.roles, "expires_at": claims.exp, "bytes": token.as_bytes().len(),
                "trust": claims.trust_id, "actors": claims.actor_chain.iter().map(|a| a.sub.clone()).collect::<Vec<_>>(),
                "instance": claims.instance,
            })
            .to_string(),
        )?;
    } else {
        print_stdout(&token.to_base64url())?;
    }
    Ok(ExitCode::SUCCESS)
}

pub(crate) const REQUEST_ABOUT: &str = "Send a signed HTTP request, like a small curl (needs a login)";
pub(crate) const REQUEST_LONG: &str = "\
Send a signed HTTP request, like a small curl.

Gets a token for --audience (cached within this run), signs a fresh proof over the method, the URL, the \
body and the token, sends the request and prints the response body. If the service asks for a server \
nonce, the request is retried once with it. The exit status is 0 for a 2xx answer; otherwise the error \
code the service sent is printed as `error: <code>: <detail>` and the exit status is 1.";
pub(crate) const REQUEST_EXAMPLES: &str = "\
Examples:
  keybound request https://nova.example/v2/servers --audience https://nova.example --project turing
  keybound request -X POST -H 'Content-Type: application/json' -d '{\"name\":\"vm1\"}' \\
      https://nova.example/v2/servers --audience https://nova.example --project turing
  keybound request -X PUT -d @image.qcow2 https://glance.example/v2/images/1/file --audience https://glance.example
  keybound request https://cinder.example/v3/volumes --audience https://cinder.example --trust 2Qf3mV0cZ8bq1Xo4yT6wUg";

/// `keybound request`.
#[derive(Debug, clap::Args)]
pub(crate) struct RequestArgs {
    /// The URL to call
    url: String,
    /// HTTP method
    #[arg(short = 'X', long = "request", default_value = "GET")]
    method: String,
    /// Extra header, 'Name: value' (repeatable)
    #[arg(short = 'H', long = "header")]
    headers: Vec<String>,
    /// Body, or @FILE to read it from a file
    #[arg(short = 'd', long = "data")]
    data: Option<String>,
    /// Print the status line and response headers first
    #[arg(short = 'i', long = "include")]
    include: bool,
    #[command(flatten)]
    scope: ScopeArgs,
    /// Config directory
    #[arg(long, env = "KEYBOUND_CONFIG_DIR")]
    config_dir: Option<PathBuf>,
}

pub(crate) fn request(args: RequestArgs) -> Result<ExitCode, CliError> {
    let dir = session::config_dir(args.config_dir.as_deref())?;
    let client = session::client(&dir)?;
    let body = match &args.data {
        None => Vec::new(),
        Some(d) => match d.strip_prefix('@') {
            Some(path) => std::fs::read(path).map_err(|e| CliError::usage(format!("cannot read {path}: {e}")))?,
            None => d.clone().into_bytes(),
        },
    };
    let method = reqwest::Method::from_bytes(args.method.as_bytes())
        .map_err(|_| CliError::usage(format!("{:?} is not an HTTP method", args.method)))?;
    let scope = args.scope.scope();
    let rt = runtime()?;
    let response = rt.block_on(async {
        let mut request = client.request(method, &args.url, &scope).body(body);
        for header in &args.headers {
            let (name, value) = header
                .split_once(':')
                .ok_or_else(|| CliError::usage(format!("header {header:?} is not 'Name: value'")))?;
            request = request.header(name.trim(), value.trim())?;
        }
        Ok::<_, CliError>(request.send().await?)
    })?;
    let status = response.status();
    if args.include {
        let mut head = format!("{:?} {status}\n", response.version());
        for (name, value) in response.headers() {
            head.push_str(&format!("{name}: {}\n", value.to_str().unwrap_or("<binary>")));
        }
        print_stdout(&head)?;
    }
    if status.is_success() {
        let bytes = rt
            .block_on(response.bytes())
            .map_err(|e| Error::new(Code::ClientUnreachable, format!("reading the answer: {e}")))?;
        let mut out = std::io::stdout().lock();
        let _ = std::io::Write::write_all(&mut out, &bytes);
        return Ok(ExitCode::SUCCESS);
    }
    let error = rt.block_on(error_from_response(response));
    Err(CliError::with_exit(error, EXIT_FAILURE))
}

pub(crate) const TRUST_ABOUT: &str =
    "Create, list, show and delete trusts: delegate roles to another user (needs a login)";
pub(crate) const TRUST_LONG: &str = "\
Create, list, show and delete trusts (spec/delegation.md).

A trust lets another user (the trustee, typically a service user such as heat@service) obtain service \
tokens on your behalf: `keybound token --trust ID` run by the trustee gives a token whose subject is you, \
whose roles are the delegated ones, bound to the trustee's key and naming the trustee as actor. The \
issuer re-checks the trust at every such mint: if you lose a delegated role, the trust yields nothing. \
Uses the stored session. Prints text (times in UTC, ISO 8601); --json prints the issuer's JSON.";
pub(crate) const TRUST_EXAMPLES: &str = "\
Examples:
  keybound trust create --trustee heat@service --project turing --roles member --lifetime 3600
  keybound trust create --trustee cinder@service --parent 2Qf3mV0cZ8bq1Xo4yT6wUg --roles reader
  keybound trust create --trustee nova-compute@service --project turing --roles reader \\
      --audience https://glance.example --uses 10
  keybound trust list --json
  keybound trust show 2Qf3mV0cZ8bq1Xo4yT6wUg
  keybound trust delete 2Qf3mV0cZ8bq1Xo4yT6wUg";

/// `keybound trust`.
#[derive(Debug, clap::Args)]
pub(crate) struct TrustArgs {
    #[command(subcommand)]
    action: TrustAction,
    /// Config directory
    #[arg(long, env = "KEYBOUND_CONFIG_DIR", global = true)]
    config_dir: Option<PathBuf>,
    /// Print the issuer's JSON (times in Unix seconds) instead of text
    #[arg(long, global = true)]
    json: bool,
}

#[derive(Debug, clap::Subcommand)]
enum TrustAction {
    /// Delegate roles on a project to a trustee (or redelegate a trust of which you are the trustee)
    #[command(
        after_help = "Example:\n  keybound trust create --trustee heat@service --project turing --roles member --lifetime 3600 --uses 100"
    )]
    Create(TrustCreateArgs),
    /// List the trusts in which you are trustor or trustee
    #[command(after_help = "Example:\n  keybound trust list")]
    List,
    /// Show one of your trusts
    #[command(after_help = "Example:\n  keybound trust show 2Qf3mV0cZ8bq1Xo4yT6wUg")]
    Show {
        /// The trust id
        id: String,
    },
    /// Delete a trust of which you are the trustor (and every trust redelegated from it)
    #[command(after_help = "Example:\n  keybound trust delete 2Qf3mV0cZ8bq1Xo4yT6wUg")]
    Delete {
        /// The trust id
        id: String,
    },
}

#[derive(Debug, clap::Args)]
struct TrustCreateArgs {
    /// The user who may use the trust, name@domain
    #[arg(long)]
    trustee: String,
    /// The project (not with --parent)
    #[arg(long, conflicts_with = "parent", required_unless_present = "parent")]
    project: Option<String>,
    /// The project's domain (default: yours)
    #[arg(long, conflicts_with = "parent")]
    domain: Option<String>,
    /// The roles to delegate, comma-separated
    #[arg(long, value_delimiter = ',', required = true)]
    roles: Vec<String>,
    /// Restrict the trust to these services (audiences), comma-separated (default: any registered service)
    #[arg(long = "audience", value_delimiter = ',')]
    audiences: Vec<String>,
    /// Seconds from now until the trust expires (default: the issuer's ceiling)
    #[arg(long, conflicts_with = "expires_at")]
    lifetime: Option<u64>,
    /// Unix time at which the trust expires
    #[arg(long)]
    expires_at: Option<u64>,
    /// How many tokens may be minted from it (default: the issuer's ceiling, or unlimited)
    #[arg(long)]
    uses: Option<u64>,
    /// Levels of redelegation the trustee may create, 0 to 3 (default 0)
    #[arg(long)]
    redelegation: Option<u64>,
    /// Redelegate this trust (you must be its trustee)
    #[arg(long)]
    parent: Option<String>,
}

pub(crate) fn trust(args: TrustArgs) -> Result<ExitCode, CliError> {
    let dir = session::config_dir(args.config_dir.as_deref())?;
    let client = session::client(&dir)?;
    let rt = runtime()?;
    let (answer, shown) = match args.action {
        TrustAction::Create(c) => {
            let expires_at = match c.lifetime {
                Some(seconds) => Some(crate::verify::Clock::now(&crate::verify::SystemClock).saturating_add(seconds)),
                None => c.expires_at,
            };
            let request = crate::client::NewTrust {
                trustee: c.trustee,
                project: c.project,
                domain: c.domain,
                roles: c.roles,
                audiences: (!c.audiences.is_empty()).then_some(c.audiences),
                expires_at,
                uses: c.uses,
                redelegation: c.redelegation,
                parent: c.parent,
            };
            let trust = rt.block_on(client.create_trust(&request))?;
            let shown = render::trust_text(&trust);
            (trust, shown)
        }
        TrustAction::List => {
            let trusts = rt.block_on(client.trusts())?;
            let shown = render::trust_table(&trusts);
            (trusts, shown)
        }
        TrustAction::Show { id } => {
            let trust = rt.block_on(client.trust(&id))?;
            let shown = render::trust_text(&trust);
            (trust, shown)
        }
        TrustAction::Delete { id } => {
            let answer = rt.block_on(client.delete_trust(&id))?;
            (
                answer,
                format!("deleted trust {id} and every trust redelegated from it"),
            )
        }
    };
    print_stdout(&if args.json { answer.to_string() } else { shown })?;
    Ok(ExitCode::SUCCESS)
}
