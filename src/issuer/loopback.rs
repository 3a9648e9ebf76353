//! An issuer served in-process on a free 127.0.0.1 port, and the small world
//! (a domain, a project, a role, a user and services) that `keybound demo`,
//! the issuer benchmark and the tests set up in it.

use std::net::SocketAddr;
use std::sync::Arc;

use super::{IssuerConfig, IssuerState};
use crate::client::{Client, Scope, error_from_response};
use crate::error::{Code, Error, Result};
use crate::key::{Algorithm, SigningKey};
use crate::verify::Clock;

/// The administrator that [`super::bootstrap`] creates.
pub const ADMIN_USER: &str = "admin@default";
/// The user of [`World`], with `member` on the project [`PROJECT`].
pub const USER: &str = "ayoung@stoughton";
/// The project of [`World`], in the domain `stoughton`.
pub const PROJECT: &str = "turing";
/// The domain of [`World`]'s user and project.
pub const DOMAIN: &str = "stoughton";
/// The role [`USER`] holds on [`PROJECT`].
pub const ROLE: &str = "member";

/// A bootstrapped issuer answering on loopback; the server stops when this
/// is dropped.
pub struct LoopbackIssuer {
    url: String,
    addr: SocketAddr,
    state: Arc<IssuerState>,
    server: tokio::task::JoinHandle<()>,
}

impl LoopbackIssuer {
    /// Binds a free 127.0.0.1 port (replacing `config.listen` and
    /// `config.issuer_id` with it), bootstraps the database with the
    /// administrator [`ADMIN_USER`] and `admin_password`, and serves.
    pub async fn start(mut config: IssuerConfig, admin_password: &str, clock: Arc<dyn Clock>) -> Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| Error::new(Code::IssuerConfig, format!("cannot bind 127.0.0.1: {e}")))?;
        let addr = listener
            .local_addr()
            .map_err(|e| Error::new(Code::IssuerConfig, format!("no local address: {e}")))?;
        let url = format!("http://{addr}");
        config.listen = addr;
        config.issuer_id = url.clone();
        super::bootstrap(&config, admin_password).await?;
        let state = IssuerState::open(config, clock).await?;
        let app = super::router(state.clone())?;
        // The same listener limits as `keybound serve` (header timeout, connection cap).
        let server = tokio::spawn(crate::http::serve(
            listener,
            app,
            crate::http::ServeConfig::default(),
            std::future::pending(),
        ));
        Ok(LoopbackIssuer {
            url,
            addr,
            state,
            server,
        })
    }

    /// The issuer's URL (`http://127.0.0.1:<port>`), also its issuer id.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The address the issuer listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The running issuer's state (its store, keys and configuration).
    pub fn state(&self) -> &Arc<IssuerState> {
        &self.state
    }

    /// The administration scope (project `admin` in domain `default`).
    pub fn admin_scope(&self) -> Scope {
        Scope::new(format!("{}/admin", self.url))
            .project("admin")
            .domain("default")
    }

    /// A client with a fresh key, logged in as [`ADMIN_USER`].
    pub async fn admin(&self, admin_password: &str) -> Result<Client> {
        let admin = Client::new(&self.url, SigningKey::generate(Algorithm::EdDSA)?)?;
        admin.login_password(ADMIN_USER, admin_password, None).await?;
        Ok(admin)
    }

    /// Creates [`World`] through the admin API, as `admin` (see [`Self::admin`]).
    pub async fn create_world(&self, admin: &Client, world: &World<'_>) -> Result<()> {
        let user = serde_json::json!({"user": USER, "password": world.password});
        let mut requests = vec![
            ("/v1/admin/domains", serde_json::json!({"name": DOMAIN})),
            (
                "/v1/admin/projects",
                serde_json::json!({"name": PROJECT, "domain": DOMAIN}),
            ),
            ("/v1/admin/roles", serde_json::json!({"name": ROLE})),
            ("/v1/admin/users", user),
            (
                "/v1/admin/grants",
                serde_json::json!({"user": USER, "project": format!("{PROJECT}@{DOMAIN}"), "role": ROLE}),
            ),
        ];
        for audience in world.services {
            requests.push(("/v1/admin/services", serde_json::json!({"audience": audience})));
        }
        for (path, body) in requests {
            self.admin_call(admin, reqwest::Method::POST, path, Some(&body)).await?;
        }
        Ok(())
    }

    /// One admin-API call as `admin` (a client of this issuer logged in as
    /// an administrator): its JSON answer, or the issuer's refusal.
    pub async fn admin_call(
        &self,
        admin: &Client,
        method: reqwest::Method,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<serde_json::Value> {
        let scope = self.admin_scope();
        let url = format!("{}{path}", self.url);
        let mut request = admin.request(method, &url, &scope);
        if let Some(body) = body {
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
        serde_json::from_slice(&bytes)
            .map_err(|e| Error::new(Code::ClientRefused, format!("the answer is not JSON: {e}")))
    }
}

impl Drop for LoopbackIssuer {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// The world of `keybound demo`: the domain [`DOMAIN`] with the project
/// [`PROJECT`], the role [`ROLE`], the user [`USER`] holding it there, and
/// one registered service per audience.
pub struct World<'a> {
    /// [`USER`]'s password.
    pub password: &'a str,
    /// The audiences registered as services.
    pub services: &'a [&'a str],
}
