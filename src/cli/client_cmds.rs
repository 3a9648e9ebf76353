//! `keybound login`, `token`, `request`, `headers` and `trust`: the client side.

use std::io::{IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use serde_json::json;
use zeroize::Zeroizing;

use super::input::http_url;
use super::render::{self, utc};
use super::session::{self, runtime};
use super::token_cache::TokenCache;
use super::{CliError, EXIT_FAILURE, print_stdout};
use crate::client::{Attempt, Client, Scope, error_from_problem};
use crate::error::{Code, Error};
use crate::token::Token;
use crate::verify::{Clock, SystemClock};

/// Largest body `-d @FILE` reads (a service's default limit is 1 MiB).
const MAX_BODY: u64 = 64 * 1024 * 1024;

/// Unix seconds as UTC ISO 8601.
pub(crate) fn when(unix: u64) -> String {
    utc(i64::try_from(unix).unwrap_or(i64::MAX))
}

pub(crate) const LOGIN_ABOUT: &str = "Log in to an issuer and store the session (bound to your key)";
pub(crate) const LOGIN_LONG: &str = "\
Log in to an issuer and store the session.

The login request carries a proof made with your client key, so the session token the issuer returns is \
bound to that key: it is useless to anyone without the key. The password comes from --password-stdin, \
from the KEYBOUND_PASSWORD environment variable, or from a prompt; with --key-login no password is sent \
and the issuer checks that your key is registered for the user.

--issuer is the issuer's id exactly as it signs its tokens (its `issuer` in \
/.well-known/keybound/issuer): proofs are checked against it, so http://localhost:8080 does not log in to \
an issuer whose id is http://127.0.0.1:8080 (the error says which id to use).

The session is stored in the profile (--profile NAME, or KEYBOUND_PROFILE; default: the default profile): \
session.json and the client key key.cbor (generated on first use) in the config directory, or in \
profiles/NAME/ there, mode 0600. Logging in again replaces the profile's session and forgets its cached \
service tokens. The config directory is $KEYBOUND_CONFIG_DIR, else $XDG_CONFIG_HOME/keybound, else \
~/.config/keybound.";
pub(crate) const LOGIN_EXAMPLES: &str = "\
Examples:
  keybound login --issuer http://127.0.0.1:8080 --user ayoung@stoughton
  echo \"$PW\" | keybound login --issuer https://issuer.example --user ayoung@stoughton \\
      --password-stdin
  keybound login --issuer https://issuer.example --user nova-compute@service \\
      --key-login --key svc.key
  keybound --profile admin login --issuer https://issuer.example --user admin@default";

/// `keybound login`.
#[derive(Debug, clap::Args)]
pub(crate) struct LoginArgs {
    /// Issuer URL: its issuer id, with the scheme (http:// or https://)
    #[arg(long, env = "KEYBOUND_ISSUER", value_parser = http_url)]
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
    /// Client key file (default: key.cbor in the profile's directory)
    #[arg(long)]
    key: Option<PathBuf>,
    /// Session lifetime in seconds (default: the issuer's)
    #[arg(long)]
    lifetime: Option<u64>,
    /// Config directory (default: $KEYBOUND_CONFIG_DIR, else ~/.config/keybound)
    #[arg(long, env = "KEYBOUND_CONFIG_DIR")]
    config_dir: Option<PathBuf>,
    /// Print the result as JSON (times in Unix seconds)
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
    let key_file = args.key.clone().unwrap_or_else(|| session::default_key_path(&dir));
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
    let thumbprint = client.key().public_key().thumbprint().to_string();
    if args.json {
        print_stdout(
            &json!({
                "subject": session.subject, "expires_at": session.expires_at, "issuer": client.issuer(),
                "key_thumbprint": thumbprint, "profile": session::profile_name(),
            })
            .to_string(),
        )?;
    } else {
        print_stdout(&format!(
            "logged in to {} as {} until {} (key {thumbprint}, profile {})",
            client.issuer(),
            session.subject,
            when(session.expires_at),
            session::profile_name()
        ))?;
    }
    Ok(ExitCode::SUCCESS)
}

/// Options that choose a token's scope, besides its audience.
#[derive(Debug, clap::Args)]
pub(crate) struct ScopeArgs {
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
    #[arg(long, conflicts_with = "trust", requires_all = ["project", "domain"], value_parser = http_url)]
    through: Option<String>,
    /// Restrict the token to one instance of the service (a VM or host id, 1 to 255 visible ASCII
    /// characters): only a service configured with that instance id accepts it
    #[arg(long, value_name = "ID")]
    instance: Option<String>,
}

impl ScopeArgs {
    fn scope(&self, audience: &str) -> Scope {
        let mut scope = Scope::new(audience);
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

/// The audience of a request to `url`: `--audience`, else the URL's origin
/// (`scheme://host[:port]`, the usual audience of a service).
fn audience_for(audience: Option<&str>, url: &str) -> Result<String, CliError> {
    if let Some(audience) = audience {
        return Ok(audience.to_owned());
    }
    let url = reqwest::Url::parse(url).map_err(|e| CliError::usage(format!("{url}: {e}")))?;
    Ok(url.origin().ascii_serialization())
}

/// A client of the profile's session with the profile's cached service
/// token for `scope`, when a usable one is on disk.
struct Session {
    client: Client,
    cache: TokenCache,
    scope: Scope,
    /// The token read from the cache, if one was.
    cached: Option<Token>,
}

impl Session {
    fn open(config_dir: Option<&Path>, scope: Scope) -> Result<Self, CliError> {
        let dir = session::config_dir(config_dir)?;
        let (client, stored) = session::client_and_session(&dir)?;
        let cache = TokenCache::for_client(&dir, &client, &stored.subject);
        let cached = cache.load(&scope, SystemClock.now()).map(|(token, expires_at)| {
            client.cache_token(&scope, token.clone(), expires_at);
            token
        });
        Ok(Session {
            client,
            cache,
            scope,
            cached,
        })
    }

    /// Writes the token the client holds now to the cache, unless it is the
    /// one read from there.
    fn keep(&self) {
        let current = self.client.cached_token(&self.scope).map(|(token, _)| token);
        if current.is_some() && current != self.cached {
            self.cache.store(&self.client, &self.scope, SystemClock.now());
        }
    }

    /// Drops the token for the scope, in memory and on disk (a service refused it).
    fn forget(&mut self) {
        self.client.forget_token(&self.scope);
        self.cache.forget(&self.scope);
        self.cached = None;
    }
}

pub(crate) const TOKEN_ABOUT: &str = "Print a service token for one audience (needs a login)";
pub(crate) const TOKEN_LONG: &str = "\
Print a service token for one audience.

Uses the stored session to ask the issuer for a token scoped to one service (and optionally one project \
and a subset of your roles). The token is printed in base64url, as it goes into `Authorization: KB …`. \
It is bound to your key: it works only together with proofs signed by that key (see `keybound request` \
and `keybound headers`). With --instance ID the token is also restricted to one instance of the service \
(a VM or a host id): a service configured with another instance id, or with none, refuses it \
(cwt.instance).

This command always asks the issuer, so it also says whether you may still get such a token (a trust \
deleted or a role revoked since is refused now); with --cached it prints the profile's cached token for \
the scope instead, when a usable one is there. Either way the token is kept in the profile's cache \
(tokens/, one file per scope, mode 0600), which `keybound request` and `keybound headers` use until 30 s \
before it expires; `keybound status` lists the cache, `keybound logout` deletes it. --json prints the \
token with its claims (expires_at in Unix seconds) and whether it came from the cache.";
pub(crate) const TOKEN_EXAMPLES: &str = "\
Examples:
  keybound token --audience https://nova.example --project turing
  keybound token --audience https://nova.example --project turing --roles reader \\
      --lifetime 60 --json
  keybound token --audience https://nova.example --trust 2Qf3mV0cZ8bq1Xo4yT6wUg --json
  keybound token --audience https://nova.canton.example --through https://canton.example \\
      --project turing --domain canton
  keybound token --audience https://nova.example --project turing --instance vm-7f3a@host-12
  keybound token --audience https://nova.example --project turing --cached";

/// `keybound token`.
#[derive(Debug, clap::Args)]
pub(crate) struct TokenArgs {
    /// The service's audience
    #[arg(long)]
    audience: String,
    #[command(flatten)]
    scope: ScopeArgs,
    /// Config directory (default: $KEYBOUND_CONFIG_DIR, else ~/.config/keybound)
    #[arg(long, env = "KEYBOUND_CONFIG_DIR")]
    config_dir: Option<PathBuf>,
    /// Print a JSON object with the token and its claims (times in Unix seconds)
    #[arg(long)]
    json: bool,
    /// Print the profile's cached token for this scope, if a usable one is there, instead of minting
    #[arg(long)]
    cached: bool,
}

pub(crate) fn token(args: TokenArgs) -> Result<ExitCode, CliError> {
    let mut session = Session::open(args.config_dir.as_deref(), args.scope.scope(&args.audience))?;
    if !args.cached {
        // Only the client's memory: the file is replaced by the new token.
        session.client.forget_token(&session.scope);
        session.cached = None;
    }
    let token = runtime()?.block_on(session.client.service_token(&session.scope))?;
    session.keep();
    if args.json {
        let claims = crate::danger::insecure_decode_token(token.as_bytes())?.claims;
        print_stdout(
            &json!({
                "token": token.to_base64url(),
                "audience": claims.aud, "subject": claims.sub, "project": claims.project, "domain": claims.domain,
                "roles": claims.roles, "expires_at": claims.exp, "bytes": token.as_bytes().len(),
                "trust": claims.trust_id, "actors": claims.actor_chain.iter().map(|a| a.sub.clone()).collect::<Vec<_>>(),
                "instance": claims.instance, "cached": session.cached.as_ref() == Some(&token),
            })
            .to_string(),
        )?;
    } else {
        print_stdout(&token.to_base64url())?;
    }
    Ok(ExitCode::SUCCESS)
}

/// The body of `-d`: the text, or the file after `@`.
fn read_body(data: Option<&str>) -> Result<Vec<u8>, CliError> {
    match data {
        None => Ok(Vec::new()),
        Some(d) => match d.strip_prefix('@') {
            Some(path) => session::read_capped(Path::new(path), MAX_BODY)
                .map_err(|e| super::input::open_error(Path::new(path), &e).context("--data")),
            None => Ok(d.as_bytes().to_vec()),
        },
    }
}

fn parse_method(method: &str) -> Result<reqwest::Method, CliError> {
    reqwest::Method::from_bytes(method.as_bytes())
        .map_err(|_| CliError::usage(format!("{method:?} is not an HTTP method")))
}

pub(crate) const REQUEST_ABOUT: &str = "Send a signed HTTP request, like a small curl (needs a login)";
pub(crate) const REQUEST_LONG: &str = "\
Send a signed HTTP request, like a small curl.

Gets a token for the audience (--audience, default the URL's origin, scheme://host[:port]), signs a fresh \
proof over the method, the URL, the body and the token, sends the request and prints the response body. \
The token comes from the profile's cache when a usable one is there (one mint serves many requests; a \
cached token the service refuses as a token, cwt.*, is dropped and the request made once more with a new \
one). If the service asks for a server nonce, the request is retried once with it.

-i prints the status line and headers first; -v prints on stderr what was sent, each attempt: the method \
and URL, the Authorization and KB-Proof values (base64url, as `keybound verify --token … --proof …` takes \
them), then the answer's status and headers, and prints the body of a refusal (problem details) on \
stdout like a success's. The exit status is 0 for a 2xx answer; otherwise the error code the service sent \
is printed as `error: <code>: <detail>` and the exit status is 1.";
pub(crate) const REQUEST_EXAMPLES: &str = "\
Examples:
  keybound request https://nova.example/v2/servers --project turing
  keybound request -X POST -H 'Content-Type: application/json' -d '{\"name\":\"vm1\"}' \\
      https://nova.example/v2/servers --project turing
  keybound request -X PUT -d @image.qcow2 https://glance.example/v2/images/1/file
  keybound request https://cinder.example/v3/volumes --trust 2Qf3mV0cZ8bq1Xo4yT6wUg
  keybound request -v https://nova.example/v2/servers --audience https://nova.example";

/// `keybound request`.
#[derive(Debug, clap::Args)]
pub(crate) struct RequestArgs {
    /// The URL to call, with its scheme (http:// or https://)
    #[arg(value_parser = http_url)]
    url: String,
    /// HTTP method
    #[arg(short = 'X', long = "request", visible_alias = "method", default_value = "GET")]
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
    /// Print what was sent (token and proof in base64url) and the answer's head on stderr
    #[arg(short = 'v', long = "verbose")]
    verbose: bool,
    /// The service's audience (default: the URL's origin)
    #[arg(long)]
    audience: Option<String>,
    #[command(flatten)]
    scope: ScopeArgs,
    /// Config directory (default: $KEYBOUND_CONFIG_DIR, else ~/.config/keybound)
    #[arg(long, env = "KEYBOUND_CONFIG_DIR")]
    config_dir: Option<PathBuf>,
}

/// The code of a `WWW-Authenticate: KB error="…"` challenge.
fn challenge_code(headers: &reqwest::header::HeaderMap) -> Option<String> {
    let value = headers.get(reqwest::header::WWW_AUTHENTICATE)?.to_str().ok()?;
    let rest = value.split_once("error=\"")?.1;
    Some(rest.split('"').next()?.to_owned())
}

/// Writes what `-v` shows of one attempt on stderr.
fn print_attempt(err: &mut impl Write, attempt: &Attempt) {
    let _ = writeln!(err, "> {} {}", attempt.method, attempt.url);
    let _ = writeln!(err, "> Authorization: {}", attempt.credentials.authorization());
    let _ = writeln!(err, "> KB-Proof: {}", attempt.credentials.proof_header());
    for (name, value) in &attempt.headers {
        let _ = writeln!(err, "> {name}: {}", value.to_str().unwrap_or("<binary>"));
    }
    let _ = writeln!(err, "> ({} bytes of body)", attempt.body_len);
    let _ = writeln!(err, "< {:?} {}", attempt.version, attempt.status);
    for (name, value) in &attempt.response_headers {
        let _ = writeln!(err, "< {name}: {}", value.to_str().unwrap_or("<binary>"));
    }
    let _ = writeln!(err, "<");
}

pub(crate) fn request(args: RequestArgs) -> Result<ExitCode, CliError> {
    let audience = audience_for(args.audience.as_deref(), &args.url)?;
    let mut session = Session::open(args.config_dir.as_deref(), args.scope.scope(&audience))?;
    let body = read_body(args.data.as_deref())?;
    let method = parse_method(&args.method)?;
    let mut headers = Vec::new();
    for header in &args.headers {
        let (name, value) = header
            .split_once(':')
            .ok_or_else(|| CliError::usage(format!("header {header:?} is not 'Name: value'")))?;
        headers.push((name.trim().to_owned(), value.trim().to_owned()));
    }
    let rt = runtime()?;
    let send = |session: &Session| {
        rt.block_on(async {
            let mut request = session
                .client
                .request(method.clone(), &args.url, &session.scope)
                .body(body.clone());
            for (name, value) in &headers {
                request = request.header(name, value)?;
            }
            Ok::<_, CliError>(request.send_traced().await?)
        })
    };
    let (mut response, mut attempts) = send(&session)?;
    let token_refused = |response: &reqwest::Response| {
        response.status() == reqwest::StatusCode::UNAUTHORIZED
            && challenge_code(response.headers()).is_some_and(|code| code.starts_with("cwt."))
    };
    if session.cached.is_some() && token_refused(&response) {
        // Only a cache: a token from an earlier run that the service refuses
        // (the issuer rotated past its key, …) is replaced, once.
        session.forget();
        let (again, more) = send(&session)?;
        response = again;
        attempts.extend(more);
    }
    if token_refused(&response) {
        session.forget();
    } else {
        session.keep();
    }
    if args.verbose {
        let mut err = std::io::stderr().lock();
        for attempt in &attempts {
            print_attempt(&mut err, attempt);
        }
    }
    let status = response.status();
    if args.include {
        let mut head = format!("{:?} {status}\n", response.version());
        for (name, value) in response.headers() {
            head.push_str(&format!("{name}: {}\n", value.to_str().unwrap_or("<binary>")));
        }
        print_stdout(&head)?;
    }
    let bytes = rt
        .block_on(response.bytes())
        .map_err(|e| Error::new(Code::ClientUnreachable, format!("reading the answer: {e}")))?;
    if status.is_success() || args.verbose || args.include {
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(&bytes).and_then(|()| out.flush());
    }
    if status.is_success() {
        return Ok(ExitCode::SUCCESS);
    }
    if args.verbose || args.include {
        // The body went to stdout: the error line starts on a line of its own.
        let _ = writeln!(std::io::stdout().lock());
    }
    Err(CliError::with_exit(error_from_problem(status, &bytes), EXIT_FAILURE))
}

pub(crate) const HEADERS_ABOUT: &str =
    "Print the Authorization and KB-Proof header lines of one request, for curl (needs a login)";
pub(crate) const HEADERS_LONG: &str = "\
Print the Authorization and KB-Proof header lines of one request, for sending it with curl or any other \
HTTP client.

Gets a token for the audience (--audience, default the URL's origin; from the profile's cache when a \
usable one is there) and signs a fresh proof over the method, the URL exactly as given (query included) \
and the body, then prints two lines:

  Authorization: KB <base64url token>
  KB-Proof: <base64url proof>

(spec/http.md §3). Send the request with the same method, URL and body bytes (curl --data-binary, not \
--data, which strips newlines) within the service's proof age (60 s by default); a proof is good for one \
request. A service that asks for server nonces needs `keybound request`, which retries with them.";
pub(crate) const HEADERS_EXAMPLES: &str = "\
Examples:
  keybound headers https://nova.example/v2/servers --project turing
  keybound headers https://nova.example/v2/servers --project turing \\
      | curl -H @- https://nova.example/v2/servers
  keybound headers -X POST -d @vm.json https://nova.example/v2/servers --project turing \\
      | curl -H @- --data-binary @vm.json https://nova.example/v2/servers";

/// `keybound headers`.
#[derive(Debug, clap::Args)]
pub(crate) struct HeadersArgs {
    /// The URL the request goes to, with its scheme (http:// or https://), exactly as it will be sent
    #[arg(value_parser = http_url)]
    url: String,
    /// HTTP method of the request
    #[arg(short = 'X', long = "method", default_value = "GET")]
    method: String,
    /// Body of the request, or @FILE to read it from a file (the proof covers its SHA-256)
    #[arg(short = 'd', long = "data")]
    data: Option<String>,
    /// The service's audience (default: the URL's origin)
    #[arg(long)]
    audience: Option<String>,
    #[command(flatten)]
    scope: ScopeArgs,
    /// Config directory (default: $KEYBOUND_CONFIG_DIR, else ~/.config/keybound)
    #[arg(long, env = "KEYBOUND_CONFIG_DIR")]
    config_dir: Option<PathBuf>,
}

pub(crate) fn headers(args: HeadersArgs) -> Result<ExitCode, CliError> {
    let audience = audience_for(args.audience.as_deref(), &args.url)?;
    let session = Session::open(args.config_dir.as_deref(), args.scope.scope(&audience))?;
    let body = read_body(args.data.as_deref())?;
    let method = parse_method(&args.method)?;
    let credentials = runtime()?.block_on(session.client.credentials(
        method.as_str(),
        &args.url,
        &body,
        &session.scope,
    ))?;
    session.keep();
    print_stdout(&format!(
        "Authorization: {}\nKB-Proof: {}",
        credentials.authorization(),
        credentials.proof_header()
    ))?;
    Ok(ExitCode::SUCCESS)
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
        after_help = "Examples:\n  keybound trust create --trustee heat@service --project turing --roles member\n  keybound trust create --trustee heat@service --project turing --roles member \\\n      --lifetime 3600 --uses 100"
    )]
    Create(TrustCreateArgs),
    /// List the trusts in which you are trustor or trustee
    #[command(after_help = "Examples:\n  keybound trust list")]
    List,
    /// Show one of your trusts
    #[command(after_help = "Examples:\n  keybound trust show 2Qf3mV0cZ8bq1Xo4yT6wUg")]
    Show {
        /// The trust id
        id: String,
    },
    /// Delete a trust of which you are the trustor (and every trust redelegated from it)
    #[command(after_help = "Examples:\n  keybound trust delete 2Qf3mV0cZ8bq1Xo4yT6wUg")]
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
