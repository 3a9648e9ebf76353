//! `keybound demo workflow`: the seed's "launch a virtual machine" workflow
//! (spec/delegation.md §8–§11) on loopback, learned in permissive mode,
//! run on exactly the learned delegations, broken on purpose, rolled out
//! in phases, and outliving every token it uses.
//!
//! nova-api takes the user's request and puts the work on a queue (in
//! process, or a Redis list with `--queue`); the nova-compute worker takes
//! it, verifies the routing slip in the message and calls glance, cinder
//! and neutron, each a service behind the keybound layer with its own
//! policy. Every party shares one test clock, so "a step that takes 400 s"
//! moves the clock instead of sleeping.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::Json;
use axum::extract::Request;
use axum::http::HeaderMap;
use axum::routing::{get, post, put};
use reqwest::Method;
use serde_json::{Value, json};
use tower::ServiceExt;

use super::demo::Step;
use crate::client::{Client, NewTrust, Scope, error_from_response};
use crate::delegation::workplan::Workplan;
use crate::encoding::{b64url_decode, b64url_encode};
use crate::error::{Code, Error, Result};
use crate::http::KeyboundLayer;
use crate::issuer::IssuerConfig;
use crate::issuer::loopback::{DOMAIN, LoopbackIssuer, PROJECT, ROLE, USER, World};
use crate::key::{Algorithm, SigningKey};
use crate::names::ProjectName;
use crate::policy::{DecisionRecord, MemoryRecords, Mode, Outcome, Policy};
use crate::proof::ProofBuilder;
use crate::token::Token;
use crate::verify::{Clock, ManualClock, MemoryReplayStore, SystemClock, TrustedIssuer, VerifiedRequest, Verifier};

/// The worker: the trustee of every hop.
const NOVA_COMPUTE: &str = "nova-compute@service";
/// The workflow's name, its workplan's name and its `KB-Workflow` label.
const WORKFLOW: &str = "deploy-instance";
/// The image the user boots.
const IMAGE: &str = "cirros-0.6";
/// How long the worker's image conversion takes on the test clock: more
/// than a token's 300 s.
const LONG_STEP: u64 = 400;
/// How long the demo waits for the worker to finish one job (real time).
const JOB_TIMEOUT: Duration = Duration::from_secs(30);

/// Glance split into `reader` and `writer`, as in the seed's example.
const GLANCE_POLICY: &str = r#"
delegated = "allow"
[[rule]]
name = "show image"
method = "GET"
path = "/v2/images/{id}"
roles = ["reader", "writer"]
[[rule]]
name = "download image"
method = "GET"
path = "/v2/images/{id}/file"
roles = ["reader", "writer"]
[[rule]]
name = "upload image"
method = "PUT"
path = "/v2/images/{id}/file"
roles = ["writer"]
"#;
const CINDER_POLICY: &str = r#"
delegated = "allow"
[[rule]]
name = "create volume"
method = "POST"
path = "/v3/volumes"
roles = ["member"]
[[rule]]
name = "show volume"
method = "GET"
path = "/v3/volumes/{id}"
roles = ["reader", "member"]
"#;
const NEUTRON_POLICY: &str = r#"
delegated = "allow"
[[rule]]
name = "list networks"
method = "GET"
path = "/v2.0/networks"
roles = ["reader"]
[[rule]]
name = "create port"
method = "POST"
path = "/v2.0/ports"
roles = ["member"]
"#;
/// nova-api serves users directly: no delegated request is admitted.
const NOVA_API_POLICY: &str = r#"
[[rule]]
name = "create server"
method = "POST"
path = "/v2/servers"
roles = ["member"]
"#;

/// `keybound demo workflow`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Carry the work from nova-api to nova-compute on this Redis list
    /// queue (redis://HOST:PORT/) instead of an in-process queue
    #[arg(long, value_name = "URL", env = "KEYBOUND_DEMO_QUEUE")]
    queue: Option<String>,
    /// Print the steps, the learned workplan, the rollout report and the
    /// denial record as one JSON document instead of text
    #[arg(long)]
    pub(super) json: bool,
}

pub(crate) const ABOUT: &str =
    "Run the seed's deploy-instance workflow on loopback: learn its workplan, run it, break it, roll it out";
pub(crate) const LONG_ABOUT: &str = "\
Run the seed's \"launch a virtual machine\" workflow end to end on loopback (spec/delegation.md §8–§11).

Starts an issuer on the embedded SQLite default in a temporary directory and four services behind the \
keybound layer, each with its own policy: nova-api (takes the user's request and queues the work), glance \
(reader and writer split), cinder and neutron; and the nova-compute@service worker, which takes the work \
from the queue, verifies the routing slip in the message and calls glance, cinder and neutron with tokens \
minted from the slip's trusts. Every party shares one test clock.

1. Learn: all services permissive; ayoung@stoughton runs the workflow with one broad trust; policy learn \
turns the decision records into a workplan (nova-compute@service gets reader on glance, never writer).
2. Run: services enforce; she runs the learned workplan (every trust at once, and a routing slip); the \
workflow succeeds with exactly those roles, and a worker step of 400 s outlives its 300 s tokens: the \
worker mints again from the trust.
3. Break: one role removed from the workplan; the workflow fails at that hop with policy.denied and the \
denial record names the missing role.
4. Phased rollout: services permissive; a plan without the neutron trust; the worker falls back to its \
own token there, the workflow completes, and the report shows exactly what enforcing would refuse.

Exits 0 only if every step behaved as expected, and removes everything it created.";
pub(crate) const EXAMPLES: &str = "\
Examples:
  keybound demo workflow
  keybound demo workflow --queue redis://127.0.0.1:6379/
  keybound demo workflow --json";

/// One protected service whose policy mode can change while it runs.
struct Service {
    name: &'static str,
    url: String,
    policy: &'static str,
    verifier: Arc<Verifier>,
    routes: axum::Router,
    /// The router behind the listener: routes, layer, policy and records.
    app: Arc<RwLock<axum::Router>>,
    /// This phase's decision records.
    records: RwLock<Arc<MemoryRecords>>,
}

impl Service {
    async fn start(
        name: &'static str,
        policy: &'static str,
        issuer: &str,
        clock: &Arc<ManualClock>,
        routes: impl FnOnce(&'static str) -> axum::Router,
    ) -> Result<Arc<Service>> {
        let (listener, url, keys) = super::demo::listener_and_keys(issuer).await?;
        let verifier = Verifier::builder(&url, TrustedIssuer::new(issuer, keys))
            .clock(clock.clone())
            // The store's fence is the shared clock's start, not the system's.
            .replay_store(Arc::new(MemoryReplayStore::default().fenced_at(clock.now())))
            .build()?;
        let service = Arc::new(Service {
            name,
            routes: routes(name),
            url,
            policy,
            verifier: Arc::new(verifier),
            app: Arc::new(RwLock::new(axum::Router::new())),
            records: RwLock::new(Arc::new(MemoryRecords::new())),
        });
        service.set_mode(Mode::Permissive)?;
        let app = service.app.clone();
        // Each request goes to the router of the moment: a mode change
        // applies to the next request, as a configuration reload would.
        let front = axum::Router::new().fallback_service(tower::service_fn(move |request: Request| {
            let current = app.read().unwrap_or_else(|p| p.into_inner()).clone();
            current.oneshot(request)
        }));
        tokio::spawn(crate::http::serve(
            listener,
            front,
            crate::http::ServeConfig::default(),
            std::future::pending(),
        ));
        Ok(service)
    }

    /// Applies the policy in `mode`, with a fresh record sink for the phase.
    fn set_mode(&self, mode: Mode) -> Result<()> {
        let records = Arc::new(MemoryRecords::new());
        let layer = KeyboundLayer::new(self.verifier.clone(), &self.url)?
            .policy(Arc::new(Policy::from_toml(self.policy)?.with_mode(mode)))
            .records(records.clone());
        *self.records.write().unwrap_or_else(|p| p.into_inner()) = records;
        *self.app.write().unwrap_or_else(|p| p.into_inner()) = self.routes.clone().layer(layer);
        Ok(())
    }

    /// This phase's decision records, read as `keybound policy` reads them.
    fn decisions(&self) -> Result<Vec<DecisionRecord>> {
        let records = self.records.read().unwrap_or_else(|p| p.into_inner()).records();
        records
            .into_iter()
            .filter(|r| r["event"] == "policy_decision")
            .map(|r| {
                serde_json::from_value(r)
                    .map_err(|e| Error::new(Code::PolicyRecordInvalid, format!("a decision record: {e}")))
            })
            .collect()
    }
}

/// What a service saw of a request, verified: its answer to every call.
fn seen(service: &str, done: &str, request: &VerifiedRequest) -> Value {
    json!({
        "service": service,
        "done": done,
        "subject": request.subject(),
        "actor": request.current_actor(),
        "roles": request.roles(),
        "trust": request.trust_id(),
        "token_issued_at": request.token().issued_at(),
        "workflow_id": request.slip().map(|s| s.workflow_id_base64url()),
    })
}

fn answer(service: &'static str, done: &'static str) -> axum::routing::MethodRouter {
    let handler = move |request: VerifiedRequest| async move { Json(seen(service, done, &request)) };
    match done.split_once(' ').map(|(method, _)| method) {
        Some("POST") => post(handler),
        Some("PUT") => put(handler),
        _ => get(handler),
    }
}

fn glance_routes(name: &'static str) -> axum::Router {
    axum::Router::new()
        .route("/v2/images/{id}", answer(name, "GET image"))
        .route(
            "/v2/images/{id}/file",
            answer(name, "GET image file").merge(answer(name, "PUT image file")),
        )
}

fn cinder_routes(name: &'static str) -> axum::Router {
    axum::Router::new()
        .route("/v3/volumes", answer(name, "POST volume"))
        .route("/v3/volumes/{id}", answer(name, "GET volume"))
}

fn neutron_routes(name: &'static str) -> axum::Router {
    axum::Router::new()
        .route("/v2.0/networks", answer(name, "GET networks"))
        .route("/v2.0/ports", answer(name, "POST port"))
}

/// The work nova-api puts on the queue: what to build, for whom, and the
/// routing slip exactly as the issuer signed it (spec/delegation.md §10.5).
/// Before slips exist (the learning run) it names one trust instead.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
struct Job {
    job: u64,
    /// The verified subject of the user's request.
    user: String,
    /// The request's `KB-Workflow` label, carried on for the records.
    workflow: Option<String>,
    /// The routing slip, base64url.
    slip: Option<String>,
    /// The one trust of a run without a slip.
    trust: Option<String>,
    image: String,
    /// The worker's image conversion takes [`LONG_STEP`] seconds.
    long_step: bool,
}

/// The queue between nova-api and nova-compute.
enum Queue {
    Memory {
        tx: tokio::sync::mpsc::Sender<String>,
        rx: tokio::sync::Mutex<tokio::sync::mpsc::Receiver<String>>,
    },
    /// A Redis list: LPUSH to put, BRPOP to take.
    Redis { client: redis::Client, key: String },
}

impl Queue {
    fn open(url: Option<&str>) -> Result<Queue> {
        let Some(url) = url else {
            let (tx, rx) = tokio::sync::mpsc::channel(16);
            return Ok(Queue::Memory {
                tx,
                rx: tokio::sync::Mutex::new(rx),
            });
        };
        let client = redis::Client::open(url).map_err(|e| Error::new(Code::ConfigInvalid, format!("--queue: {e}")))?;
        let key = format!(
            "keybound-demo:{}:jobs",
            crate::encoding::hex_encode(&super::demo::random::<8>()?)
        );
        Ok(Queue::Redis { client, key })
    }

    fn describe(&self) -> String {
        match self {
            Queue::Memory { .. } => "in-process queue".into(),
            Queue::Redis { key, .. } => format!("Redis list {key}"),
        }
    }

    async fn redis(client: &redis::Client) -> Result<redis::aio::MultiplexedConnection> {
        client
            .get_multiplexed_async_connection()
            .await
            .map_err(|e| Error::new(Code::ReplayStoreUnavailable, format!("the queue's Redis: {e}")))
    }

    async fn put(&self, message: String) -> Result<()> {
        match self {
            Queue::Memory { tx, .. } => tx
                .send(message)
                .await
                .map_err(|_| Error::new(Code::IssuerConfig, "the worker is gone")),
            Queue::Redis { client, key } => redis::cmd("LPUSH")
                .arg(key)
                .arg(message)
                .query_async::<u64>(&mut Queue::redis(client).await?)
                .await
                .map(drop)
                .map_err(|e| Error::new(Code::ReplayStoreUnavailable, format!("LPUSH: {e}"))),
        }
    }

    /// The next message, waiting at most about a second.
    async fn take(&self) -> Result<Option<String>> {
        match self {
            Queue::Memory { rx, .. } => {
                let mut rx = rx.lock().await;
                Ok(tokio::time::timeout(Duration::from_secs(1), rx.recv())
                    .await
                    .ok()
                    .flatten())
            }
            Queue::Redis { client, key } => redis::cmd("BRPOP")
                .arg(key)
                .arg(1)
                .query_async::<Option<(String, String)>>(&mut Queue::redis(client).await?)
                .await
                .map(|popped| popped.map(|(_, message)| message))
                .map_err(|e| Error::new(Code::ReplayStoreUnavailable, format!("BRPOP: {e}"))),
        }
    }

    async fn remove(&self) {
        if let Queue::Redis { client, key } = self
            && let Ok(mut connection) = Queue::redis(client).await
        {
            let _ = redis::cmd("DEL").arg(key).query_async::<u64>(&mut connection).await;
        }
    }
}

/// nova-api: a user's create-server request becomes a job on the queue.
fn nova_api_routes(queue: Arc<Queue>) -> impl FnOnce(&'static str) -> axum::Router {
    move |_| {
        let next = Arc::new(AtomicU64::new(1));
        axum::Router::new().route(
            "/v2/servers",
            post(
                move |request: VerifiedRequest, headers: HeaderMap, body: axum::body::Bytes| {
                    let (queue, next) = (queue.clone(), next.clone());
                    async move {
                        let asked: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                        let job = Job {
                            job: next.fetch_add(1, Ordering::Relaxed),
                            user: request.subject().to_owned(),
                            workflow: headers
                                .get(crate::http::WORKFLOW_HEADER)
                                .and_then(|v| v.to_str().ok())
                                .map(str::to_owned),
                            // The verified slip's bytes, as received.
                            slip: request.slip().map(|s| s.to_base64url()),
                            trust: asked["trust"].as_str().map(str::to_owned),
                            image: asked["image"].as_str().unwrap_or(IMAGE).to_owned(),
                            long_step: asked["long_step"].as_bool().unwrap_or(false),
                        };
                        let message = serde_json::to_string(&job).unwrap_or_default();
                        match queue.put(message).await {
                            Ok(()) => (axum::http::StatusCode::ACCEPTED, Json(json!({"job": job.job}))),
                            Err(e) => (
                                axum::http::StatusCode::SERVICE_UNAVAILABLE,
                                Json(json!({"error": e.code().as_str()})),
                            ),
                        }
                    }
                },
            ),
        )
    }
}

/// What the worker did for one job.
#[derive(Debug, Default)]
struct Done {
    /// Every service's answer, in call order.
    calls: Vec<Value>,
    /// The token of the first glance call, kept to show it expired.
    first_glance_token: Option<Token>,
    /// Where it stopped, and why.
    failed: Option<(String, Error)>,
}

/// nova-compute: takes jobs, verifies their slips, calls the next hops.
struct Worker {
    client: Client,
    /// Verifies the slips of queued messages (S1–S6) with the issuer's keys.
    slips: Arc<Verifier>,
    clock: Arc<ManualClock>,
    glance: String,
    cinder: String,
    neutron: String,
    /// Phased rollout: where the slip has no hop, use the worker's own
    /// service token, as before delegation (the services record it).
    fallback: AtomicBool,
}

impl Worker {
    async fn run(self: Arc<Self>, queue: Arc<Queue>, done: tokio::sync::mpsc::Sender<Done>) {
        loop {
            let message = match queue.take().await {
                Ok(Some(message)) => message,
                Ok(None) => continue,
                Err(e) => {
                    let _ = done
                        .send(Done {
                            failed: Some(("the queue".into(), e)),
                            ..Done::default()
                        })
                        .await;
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            };
            let result = self.handle(&message).await;
            if done.send(result).await.is_err() {
                return;
            }
        }
    }

    async fn handle(&self, message: &str) -> Done {
        let mut done = Done::default();
        let job: Job = match serde_json::from_str(message) {
            Ok(job) => job,
            Err(e) => {
                done.failed = Some((
                    "the message".into(),
                    Error::new(Code::InputMalformed, format!("not a job: {e}")),
                ));
                return done;
            }
        };
        if let Err((at, e)) = self.work(&job, &mut done).await {
            done.failed = Some((at, e));
        }
        done
    }

    /// The calls of one job; the first failure names its call.
    async fn work(&self, job: &Job, done: &mut Done) -> std::result::Result<(), (String, Error)> {
        fn at(what: &str) -> impl FnOnce(Error) -> (String, Error) + '_ {
            move |e| (what.to_owned(), e)
        }
        // Verified again here (S1–S6): no slip is trusted because nova-api
        // verified it, and its trustor must be the job's user.
        let slip = match &job.slip {
            Some(text) => {
                let bytes = b64url_decode(text)
                    .map_err(|_| Error::new(Code::SlipMalformed, "the job's slip is not base64url"))
                    .map_err(at("the job's slip"))?;
                let slip = self
                    .slips
                    .verify_slip_async(&bytes)
                    .await
                    .map_err(at("the job's slip"))?;
                if slip.trustor() != job.user {
                    return Err((
                        "the job's slip".into(),
                        Error::new(Code::SlipWrongTrustor, "the slip is not the job's user's"),
                    ));
                }
                Some(slip)
            }
            None => None,
        };
        let scope = |audience: &str| -> std::result::Result<Scope, (String, Error)> {
            let fallback = Scope::new(audience).project("service").domain("service");
            match (&slip, &job.trust) {
                (Some(slip), _) => match self.client.next_hop_scope(slip, audience) {
                    Err(e) if e.code() == Code::ClientNoHop && self.fallback.load(Ordering::Relaxed) => Ok(fallback),
                    other => other.map_err(at(audience)),
                },
                (None, Some(trust)) => Ok(Scope::new(audience).trust(trust)),
                (None, None) => Ok(fallback),
            }
        };
        let calls = [
            (Method::GET, format!("{}/v2/images/{}", self.glance, job.image)),
            (Method::POST, format!("{}/v3/volumes", self.cinder)),
            (Method::GET, format!("{}/v2/images/{}/file", self.glance, job.image)),
            (Method::GET, format!("{}/v3/volumes/vol-1", self.cinder)),
            (Method::GET, format!("{}/v2.0/networks", self.neutron)),
            (Method::POST, format!("{}/v2.0/ports", self.neutron)),
        ];
        for (n, (method, url)) in calls.into_iter().enumerate() {
            if n == 2 && job.long_step {
                // Converting the image: longer than any token lives.
                self.clock.advance(LONG_STEP);
            }
            let what = format!("{method} {url}");
            let audience = [&self.glance, &self.cinder, &self.neutron]
                .into_iter()
                .find(|a| url.starts_with(a.as_str()))
                .cloned()
                .unwrap_or_default();
            let scope = scope(&audience)?;
            if n == 0 {
                done.first_glance_token = Some(self.client.service_token(&scope).await.map_err(at(&what))?);
            }
            let mut request = self.client.request(method, &url, &scope).body(Vec::new());
            if let Some(label) = &job.workflow {
                request = request
                    .header(crate::http::WORKFLOW_HEADER.as_str(), label)
                    .map_err(at(&what))?;
            }
            // The slip goes on only with the trustor's delegated tokens: the
            // worker's own token is not the trustor's (S7).
            if let Some(slip) = &slip
                && scope.trust.is_some()
            {
                request = request.slip(slip);
            }
            let response = request.send().await.map_err(at(&what))?;
            if !response.status().is_success() {
                return Err((what, error_from_response(response).await));
            }
            let body = response
                .bytes()
                .await
                .map_err(|e| (what.clone(), Error::new(Code::ClientUnreachable, e.to_string())))?;
            let answer: Value = serde_json::from_slice(&body)
                .map_err(|e| (what.clone(), Error::new(Code::ClientRefused, format!("not JSON: {e}"))))?;
            done.calls.push(answer);
        }
        Ok(())
    }
}

/// The seed's world: an issuer, four services, a worker, a user.
struct Deployment {
    loopback: LoopbackIssuer,
    clock: Arc<ManualClock>,
    user: Client,
    worker: Arc<Worker>,
    nova_api: Arc<Service>,
    services: Vec<Arc<Service>>,
    queue: Arc<Queue>,
    done: tokio::sync::Mutex<tokio::sync::mpsc::Receiver<Done>>,
}

impl Deployment {
    async fn start(dir: &std::path::Path, queue: Option<&str>) -> Result<Deployment> {
        let clock = Arc::new(ManualClock::new(SystemClock.now()));
        let admin_password = b64url_encode(&super::demo::random::<18>()?);
        let loopback = LoopbackIssuer::start(IssuerConfig::new(dir), &admin_password, clock.clone()).await?;
        let issuer = loopback.url().to_owned();
        let queue = Arc::new(Queue::open(queue)?);
        let nova_api = Service::start(
            "nova-api",
            NOVA_API_POLICY,
            &issuer,
            &clock,
            nova_api_routes(queue.clone()),
        )
        .await?;
        let glance = Service::start("glance", GLANCE_POLICY, &issuer, &clock, glance_routes).await?;
        let cinder = Service::start("cinder", CINDER_POLICY, &issuer, &clock, cinder_routes).await?;
        let neutron = Service::start("neutron", NEUTRON_POLICY, &issuer, &clock, neutron_routes).await?;

        let admin = loopback.admin(&admin_password).await?;
        let password = "correct horse battery staple";
        let audiences = [&nova_api.url, &glance.url, &cinder.url, &neutron.url].map(String::as_str);
        loopback
            .create_world(
                &admin,
                &World {
                    password,
                    services: &audiences,
                },
            )
            .await?;
        let worker_password = b64url_encode(&super::demo::random::<18>()?);
        let mut calls = vec![
            ("/v1/admin/domains", json!({"name": "service"})),
            ("/v1/admin/projects", json!({"name": "service", "domain": "service"})),
            ("/v1/admin/roles", json!({"name": "service"})),
            (
                "/v1/admin/users",
                json!({"user": NOVA_COMPUTE, "kind": "service", "password": worker_password}),
            ),
            (
                "/v1/admin/grants",
                json!({"user": NOVA_COMPUTE, "project": "service@service", "role": "service"}),
            ),
        ];
        for role in ["reader", "writer"] {
            calls.push(("/v1/admin/roles", json!({"name": role})));
            calls.push((
                "/v1/admin/grants",
                json!({"user": USER, "project": format!("{PROJECT}@{DOMAIN}"), "role": role}),
            ));
        }
        for (path, body) in calls {
            super::demo::admin_call(&loopback, &admin, Method::POST, path, &body).await?;
        }

        let user = Client::new(&issuer, SigningKey::generate(Algorithm::EdDSA)?)?.with_clock(clock.clone());
        user.login_password(USER, password, None).await?;
        let worker_client = Client::new(&issuer, SigningKey::generate(Algorithm::EdDSA)?)?.with_clock(clock.clone());
        worker_client
            .login_password(NOVA_COMPUTE, &worker_password, None)
            .await?;
        let worker = Arc::new(Worker {
            client: worker_client,
            slips: nova_api.verifier.clone(),
            clock: clock.clone(),
            glance: glance.url.clone(),
            cinder: cinder.url.clone(),
            neutron: neutron.url.clone(),
            fallback: AtomicBool::new(false),
        });
        let (done_tx, done_rx) = tokio::sync::mpsc::channel(4);
        tokio::spawn(worker.clone().run(queue.clone(), done_tx));
        Ok(Deployment {
            loopback,
            clock,
            user,
            worker,
            nova_api,
            services: vec![glance, cinder, neutron],
            queue,
            done: tokio::sync::Mutex::new(done_rx),
        })
    }

    fn service(&self, name: &str) -> &Arc<Service> {
        self.services
            .iter()
            .find(|s| s.name == name)
            .expect("the demo's services are fixed")
    }

    fn set_mode(&self, mode: Mode) -> Result<()> {
        self.nova_api.set_mode(mode)?;
        self.services.iter().try_for_each(|s| s.set_mode(mode))
    }

    /// Every service's records of this phase.
    fn decisions(&self) -> Result<Vec<DecisionRecord>> {
        let mut all = self.nova_api.decisions()?;
        for service in &self.services {
            all.extend(service.decisions()?);
        }
        Ok(all)
    }

    fn policies(&self) -> Result<BTreeMap<String, Policy>> {
        std::iter::once(&self.nova_api)
            .chain(&self.services)
            .map(|s| Ok((s.url.clone(), Policy::from_toml(s.policy)?)))
            .collect()
    }

    /// The user asks nova-api for a server; the worker does the rest.
    async fn deploy(&self, slip: Option<&str>, trust: Option<&str>, long_step: bool) -> Result<Done> {
        let scope = Scope::new(&self.nova_api.url).project(PROJECT);
        let mut request = self
            .user
            .post(&format!("{}/v2/servers", self.nova_api.url), &scope)
            .header(crate::http::WORKFLOW_HEADER.as_str(), WORKFLOW)?
            .json(&json!({"name": "vm-1", "image": IMAGE, "trust": trust, "long_step": long_step}));
        if let Some(slip) = slip {
            request = request.slip(b64url_decode(slip)?);
        }
        let response = request.send().await?;
        if !response.status().is_success() {
            return Err(error_from_response(response).await);
        }
        let mut done = self.done.lock().await;
        tokio::time::timeout(JOB_TIMEOUT, done.recv())
            .await
            .map_err(|_| Error::new(Code::ClientUnreachable, "the worker did not finish the job in 30 s"))?
            .ok_or_else(|| Error::new(Code::ClientUnreachable, "the worker stopped"))
    }

    /// Runs `plan` as the user: the trusts and the slip (base64url).
    async fn run_plan(&self, plan: &Workplan) -> Result<String> {
        let project = ProjectName::parse(&format!("{PROJECT}@{DOMAIN}"))?;
        let answer = self
            .user
            .run_workplan(&plan.run_request(&project, self.clock.now())?)
            .await?;
        answer["slip"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| Error::new(Code::ClientRefused, "the workplan run answered no slip"))
    }
}

/// A job's outcome as a step sees it: the calls made, or where it stopped.
fn outcome(done: &Done) -> std::result::Result<String, Error> {
    match &done.failed {
        Some((at, e)) => Err(Error::new(e.code(), format!("at {at}: {}", e.message()))),
        None => Ok(format!("{} calls", done.calls.len())),
    }
}

/// The roles a service saw on its calls, by the service's name.
fn roles_seen(done: &Done, service: &str) -> String {
    let mut roles: Vec<String> = done
        .calls
        .iter()
        .filter(|c| c["service"] == service)
        .flat_map(|c| c["roles"].as_array().cloned().unwrap_or_default())
        .filter_map(|r| r.as_str().map(str::to_owned))
        .collect();
    roles.sort();
    roles.dedup();
    roles.join(" ")
}

/// The learned plan's roles, per service name.
fn plan_roles(plan: &Workplan, deployment: &Deployment) -> String {
    let mut lines: Vec<String> = plan
        .delegations
        .iter()
        .map(|d| {
            let name = deployment
                .services
                .iter()
                .find(|s| s.url == d.audience)
                .map_or(d.audience.as_str(), |s| s.name);
            let roles: Vec<&str> = d.roles.iter().map(|r| r.as_str()).collect();
            format!("{} on {name}: {}", d.trustee, roles.join(" "))
        })
        .collect();
    lines.sort();
    lines.join("; ")
}

/// A signed request with exactly this token (the driver's own checks).
async fn send_with(key: &SigningKey, token: &Token, url: &str, now: u64) -> std::result::Result<String, Error> {
    let proof = ProofBuilder::new("GET", url, token.as_bytes(), b"", now)?.sign(key)?;
    let response = reqwest::Client::new()
        .get(url)
        .header("authorization", format!("KB {}", token.to_base64url()))
        .header("kb-proof", b64url_encode(proof.as_bytes()))
        .send()
        .await
        .map_err(|e| Error::new(Code::ClientUnreachable, e.to_string()))?;
    if response.status().is_success() {
        return Ok("served".into());
    }
    Err(error_from_response(response).await)
}

/// The story; returns the steps that failed and, for `--json`, what it found.
pub(crate) async fn story(dir: &std::path::Path, args: &Args) -> Result<(usize, Value)> {
    let mut step = Step::new(args.json);
    let d = Deployment::start(dir, args.queue.as_deref()).await?;
    let result = phases(&d, &mut step).await;
    d.queue.remove().await;
    let mut found = result?;
    found["queue"] = json!(d.queue.describe());
    found["steps"] = json!(step.entries);
    Ok((step.failures, found))
}

async fn phases(d: &Deployment, step: &mut Step) -> Result<Value> {
    let name = |s: &Service| format!("{:<8} {}", s.name, s.url);
    let services: Vec<String> = std::iter::once(&d.nova_api)
        .chain(&d.services)
        .map(|s| name(s))
        .collect();
    step.say(&format!(
        "issuer   {}  (SQLite)\n{}\nqueue    {}\nworker   {NOVA_COMPUTE}; every party on one test clock\n",
        d.loopback.url(),
        services.join("\n"),
        d.queue.describe()
    ))?;
    let mut found = json!({"issuer": d.loopback.url(), "services": {}});
    for s in std::iter::once(&d.nova_api).chain(&d.services) {
        found["services"][s.name] = json!(s.url);
    }

    // 1. Learn: everything permissive, one broad trust.
    step.say("1. learn: every service permissive; ayoung runs the workflow with one broad trust\n")?;
    let broad = d
        .user
        .create_trust(&NewTrust {
            trustee: NOVA_COMPUTE.into(),
            project: Some(PROJECT.into()),
            roles: vec![ROLE.into(), "reader".into(), "writer".into()],
            expires_at: Some(d.clock.now() + 3600),
            redelegation: Some(0),
            ..Default::default()
        })
        .await?;
    let broad = broad["id"]
        .as_str()
        .ok_or_else(|| Error::new(Code::ClientRefused, "the issuer answered a trust without an id"))?
        .to_owned();
    let done = d.deploy(None, Some(&broad), false).await?;
    step.check(
        "the workflow runs with a trust for member, reader and writer",
        "accepted",
        outcome(&done),
    )?;
    let records = d.decisions()?;
    let learned = crate::policy::learn::learn(
        &records,
        crate::policy::WorkflowSelector::Label(WORKFLOW),
        &d.policies()?,
        WORKFLOW,
        "Launch a virtual machine: image from glance, a volume from cinder, a port from neutron",
    );
    let plan = learned.as_ref().ok().and_then(|l| l.workplan.clone());
    step.check_answer(
        &format!("policy learn on the {} decision records of {WORKFLOW}", records.len()),
        &format!(
            "{NOVA_COMPUTE} on cinder: member; {NOVA_COMPUTE} on glance: reader; {NOVA_COMPUTE} on neutron: member reader"
        ),
        learned
            .as_ref()
            .map_err(Clone::clone)
            .and_then(|l| match &l.workplan {
                Some(plan) => Ok(plan_roles(plan, d)),
                None => Err(Error::new(Code::PolicyLearnEmpty, "no delegated request: no workplan")),
            }),
    )?;
    let Some(plan) = plan else {
        return Ok(found);
    };
    if let Ok(learned) = &learned {
        found["learned"] = json!(learned);
    }
    found["workplan"] = json!(plan.to_toml());
    step.say(&format!(
        "\nthe learned workplan (keybound workplan run FILE --project turing):\n{}",
        plan.to_toml()
    ))?;

    // 2. Run: enforce, the learned plan only.
    step.say("2. run: every service enforces; ayoung deletes the broad trust and runs the learned workplan\n")?;
    d.user.delete_trust(&broad).await?;
    d.set_mode(Mode::Enforce)?;
    let slip = d.run_plan(&plan).await;
    step.check(
        "ayoung runs the workplan: three trusts and a routing slip, in one transaction",
        "accepted",
        slip.as_ref()
            .map(|s| format!("slip of {} characters", s.len()))
            .map_err(Clone::clone),
    )?;
    let slip = slip?;
    let done = d.deploy(Some(&slip), None, true).await?;
    step.check(
        "the workflow, carrying the slip through the queue, with a 400 s step in the worker",
        "accepted",
        outcome(&done),
    )?;
    step.check_answer(
        "the roles glance saw on nova-compute's calls",
        "reader",
        Ok(roles_seen(&done, "glance")),
    )?;
    let glance_iats: Vec<u64> = done
        .calls
        .iter()
        .filter(|c| c["service"] == "glance")
        .filter_map(|c| c["token_issued_at"].as_u64())
        .collect();
    step.check_answer(
        "the glance token after the 400 s step was minted again from the trust",
        &format!("minted {LONG_STEP} s later"),
        match glance_iats.as_slice() {
            [first, second] => Ok(format!("minted {} s later", second.saturating_sub(*first))),
            other => Err(Error::new(Code::ClientRefused, format!("glance calls: {other:?}"))),
        },
    )?;
    if let Some(first) = &done.first_glance_token {
        let url = format!("{}/v2/images/{IMAGE}", d.service("glance").url);
        step.check(
            "the first glance token, sent again after the step",
            Code::CwtExpired.as_str(),
            send_with(d.worker.client.key(), first, &url, d.clock.now()).await,
        )?;
    }
    let verified = d.worker.slips.verify_slip_async(&b64url_decode(&slip)?).await?;
    let scope = d.worker.client.next_hop_scope(&verified, &d.service("glance").url)?;
    let upload = d
        .worker
        .client
        .request(
            Method::PUT,
            &format!("{}/v2/images/{IMAGE}/file", d.service("glance").url),
            &scope,
        )
        .slip(&verified)
        .body(b"not an image".to_vec())
        .send()
        .await;
    step.check(
        "nova-compute uploads an image with its glance token from the plan",
        Code::PolicyDenied.as_str(),
        match upload {
            Ok(r) if r.status().is_success() => Ok("uploaded".into()),
            Ok(r) => Err(error_from_response(r).await),
            Err(e) => Err(e),
        },
    )?;

    // 3. Break: one role fewer.
    step.say("\n3. break: member removed from the neutron delegation of the workplan\n")?;
    let mut broken = plan.clone();
    let neutron = d.service("neutron");
    for delegation in &mut broken.delegations {
        if delegation.audience == neutron.url {
            delegation.roles.retain(|r| r.as_str() != ROLE);
        }
    }
    let slip = d.run_plan(&broken).await?;
    let done = d.deploy(Some(&slip), None, false).await?;
    step.check(
        "the workflow, on the broken workplan",
        Code::PolicyDenied.as_str(),
        outcome(&done),
    )?;
    let denials: Vec<DecisionRecord> = neutron
        .decisions()?
        .into_iter()
        .filter(|r| r.outcome == Outcome::Deny)
        .collect();
    step.check_answer(
        "neutron's denial record",
        &format!("POST /v2.0/ports by {NOVA_COMPUTE} for {USER}: held reader, needs one of member"),
        match denials.as_slice() {
            [r] => Ok(format!(
                "{} by {} for {}: held {}, needs one of {}",
                r.action,
                r.current_actor().unwrap_or("-"),
                r.subject,
                r.roles_held.join(" "),
                r.roles_allowing.join(" ")
            )),
            other => Err(Error::new(
                Code::ClientRefused,
                format!("{} denial records", other.len()),
            )),
        },
    )?;
    if let Some(denial) = denials.first() {
        found["denial"] = denial.to_json();
    }

    // 4. Phased rollout: permissive again, a plan without the neutron trust.
    step.say(
        "\n4. phased rollout: services permissive; a workplan without the neutron delegation; the worker falls back to its own token there\n",
    )?;
    d.set_mode(Mode::Permissive)?;
    d.worker.fallback.store(true, Ordering::Relaxed);
    let mut partial = plan.clone();
    partial.delegations.retain(|d| d.audience != neutron.url);
    let slip = d.run_plan(&partial).await?;
    let done = d.deploy(Some(&slip), None, false).await?;
    step.check(
        "the workflow, lacking the neutron trust, in permissive mode",
        "accepted",
        outcome(&done),
    )?;
    let report = crate::policy::report::report(&d.decisions()?, Some(crate::policy::WorkflowSelector::Label(WORKFLOW)));
    let mut would_fail = Vec::new();
    for audience in &report.audiences {
        for rule in audience.rules.iter().filter(|r| r.would_deny > 0) {
            let service = std::iter::once(&d.nova_api)
                .chain(&d.services)
                .find(|s| s.url == audience.audience)
                .map_or(audience.audience.as_str(), |s| s.name);
            would_fail.push(format!(
                "{service} {}: {} would deny, missing {}, by {}",
                rule.rule.as_deref().unwrap_or("(no rule)"),
                rule.would_deny,
                rule.missing_roles.join(" "),
                rule.subjects.join(" ")
            ));
        }
    }
    step.check_answer(
        "policy report: what enforcing would have refused",
        &format!(
            "neutron create port: 1 would deny, missing member, by {NOVA_COMPUTE}; neutron list networks: 1 would deny, missing reader, by {NOVA_COMPUTE}"
        ),
        Ok(would_fail.join("; ")),
    )?;
    found["rollout_report"] = json!(report);
    Ok(found)
}
