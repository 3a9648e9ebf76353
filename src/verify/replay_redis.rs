//! A replay store in Redis, shared by the replicas of one service.
//!
//! Each proof is recorded by one script, atomic in Redis, in one round
//! trip: it reads the fence key (`<prefix>fence`, the time before which
//! proofs are refused), refuses a proof made before it
//! (`replay.store_restarted`), and records the proof with `SET key 1 NX PX
//! ttl`: of two replicas seeing the same proof, exactly one gets `OK`. A
//! missing fence key means Redis is new or lost its data (a restart without
//! persistence, a flush): the script sets the fence to the verifier's
//! `now`, so no proof accepted before the loss is accepted again. Any error
//! or timeout answers `replay.store_unavailable`: the request is refused,
//! never waved through. The store refuses to start when Redis could evict
//! live entries (any `maxmemory-policy` but `noeviction`) or could come back
//! from a crash with an older copy of its data, which the fence cannot see
//! (RDB snapshots, or an append-only file not synced on every write).

use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use super::replay::{AsyncReplayStore, ReplayEntry, ReplayFuture, restarted};
use crate::error::{Code, Error, Result};

/// Options of [`RedisReplayStore`], with their defaults.
#[derive(Clone, Debug)]
pub struct RedisReplayOptions {
    /// Prefix of every key. Default `kb:replay:`.
    pub prefix: String,
    /// Timeout of one command; past it the request is refused. Default 250 ms.
    pub timeout: Duration,
    /// Skip the `maxmemory-policy` check, for servers that hide `CONFIG`
    /// (managed Redis). Only set this when the policy is known to be
    /// `noeviction`. Default false.
    pub skip_eviction_policy_check: bool,
    /// Skip the persistence check, for servers that hide `CONFIG`. Only set
    /// this when Redis either persists nothing (the fence then covers its
    /// restarts) or syncs its append-only file on every write. Default false.
    pub skip_persistence_check: bool,
}

impl Default for RedisReplayOptions {
    fn default() -> Self {
        RedisReplayOptions {
            prefix: "kb:replay:".into(),
            timeout: Duration::from_millis(250),
            skip_eviction_policy_check: false,
            skip_persistence_check: false,
        }
    }
}

/// Replay detection in Redis. An [`AsyncReplayStore`] only, so a verifier
/// holding it is used with
/// [`Verifier::verify_request_async`](crate::verify::Verifier::verify_request_async);
/// the synchronous `verify_request` does not compile:
///
/// ```compile_fail,E0599
/// # async fn run(verifier: keybound::verify::VerifierBuilder) -> keybound::Result<()> {
/// # let (token, proof) = (b"", b"");
/// # let request = keybound::proof::RequestInfo::new("GET", "https://nova.example/", b"");
/// use std::sync::Arc;
/// use keybound::verify::{RedisReplayOptions, RedisReplayStore};
/// let store = RedisReplayStore::connect("redis://127.0.0.1/", RedisReplayOptions::default()).await?;
/// let verifier = verifier.replay_store(Arc::new(store)).build()?;
/// verifier.verify_request(token, proof, &request)?; // error: needs a ReplayStore
/// # Ok(()) }
/// ```
///
/// ```no_run
/// # async fn run(verifier: keybound::verify::VerifierBuilder) -> keybound::Result<()> {
/// # let (token, proof) = (b"", b"");
/// # let request = keybound::proof::RequestInfo::new("GET", "https://nova.example/", b"");
/// use std::sync::Arc;
/// use keybound::verify::{Clock, RedisReplayOptions, RedisReplayStore, SystemClock};
/// let store = RedisReplayStore::connect("redis://127.0.0.1/", RedisReplayOptions::default()).await?;
/// // At start: a new Redis is fenced at this start, not at its first proof.
/// store.fence_if_new(SystemClock.now()).await?;
/// let verifier = verifier.replay_store(Arc::new(store)).build()?;
/// let verified = verifier.verify_request_async(token, proof, &request).await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct RedisReplayStore {
    connection: ConnectionManager,
    options: RedisReplayOptions,
    fence_key: Vec<u8>,
    /// SHA-1 of [`RECORD_SCRIPT`], as Redis named it at `SCRIPT LOAD`.
    script_sha: String,
}

/// KEYS: the replay key, the fence key. ARGV: the entry's time to live in
/// ms, the proof's `iat`, the verifier's `now`. Answers the outcome and the
/// fence.
const RECORD_SCRIPT: &str = r"
local fence = tonumber(redis.call('GET', KEYS[2]))
if not fence then
  fence = tonumber(ARGV[3])
  redis.call('SET', KEYS[2], fence)
end
if tonumber(ARGV[2]) < fence then
  return {'restarted', fence}
end
if redis.call('SET', KEYS[1], '1', 'NX', 'PX', ARGV[1]) then
  return {'ok', fence}
end
return {'replay', fence}
";

impl std::fmt::Debug for RedisReplayStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RedisReplayStore({:?})", self.options.prefix)
    }
}

fn unavailable(what: impl std::fmt::Display) -> Error {
    Error::new(
        Code::ReplayStoreUnavailable,
        format!("the replay store (Redis) is unavailable: {what}; refusing the request"),
    )
}

impl RedisReplayStore {
    /// Connects to `url` (`redis://host:port/db`), checks that Redis will
    /// not evict live entries nor come back from a crash with an older copy
    /// of them, and loads the recording script.
    pub async fn connect(url: &str, options: RedisReplayOptions) -> Result<Self> {
        let client =
            redis::Client::open(url).map_err(|e| Error::new(Code::InputMalformed, format!("Redis URL: {e}")))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(options.timeout.max(Duration::from_secs(1))))
            .set_response_timeout(Some(options.timeout))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(500));
        let mut connection = tokio::time::timeout(
            Duration::from_secs(5),
            client.get_connection_manager_with_config(config),
        )
        .await
        .map_err(|_| unavailable("connecting timed out"))?
        .map_err(unavailable)?;
        if !options.skip_eviction_policy_check {
            let reply: Vec<String> = redis::cmd("CONFIG")
                .arg("GET")
                .arg("maxmemory-policy")
                .query_async(&mut connection)
                .await
                .map_err(|e| {
                    unavailable(format!(
                        "cannot read maxmemory-policy ({e}); set skip_eviction_policy_check only if it is noeviction"
                    ))
                })?;
            let policy = reply.get(1).map(String::as_str).unwrap_or("unknown");
            if policy != "noeviction" {
                return Err(Error::new(
                    Code::ReplayStoreUnavailable,
                    format!(
                        "Redis maxmemory-policy is {policy:?}: it could evict live replay entries and let a proof be replayed; configure noeviction"
                    ),
                ));
            }
        }
        if !options.skip_persistence_check {
            check_persistence(&mut connection).await?;
        }
        let script_sha: String = redis::cmd("SCRIPT")
            .arg("LOAD")
            .arg(RECORD_SCRIPT)
            .query_async(&mut connection)
            .await
            .map_err(|e| unavailable(format!("cannot load the recording script ({e})")))?;
        let fence_key = [options.prefix.as_bytes(), b"fence"].concat();
        Ok(RedisReplayStore {
            connection,
            options,
            fence_key,
            script_sha,
        })
    }

    /// Sets the fence to `now` when Redis holds none (it is new, or lost its
    /// data), as the first proof recorded would. Called when the verifier
    /// starts, so that the fence of a new Redis is the verifier's start
    /// (P13) and not its first proof's time: a proof made after the start
    /// but in an earlier second than that first use was refused.
    pub async fn fence_if_new(&self, now: u64) -> Result<()> {
        let mut connection = self.connection.clone();
        let mut command = redis::cmd("SET");
        command.arg(&self.fence_key).arg(now).arg("NX");
        let set = command.query_async::<Option<String>>(&mut connection);
        tokio::time::timeout(self.options.timeout, set)
            .await
            .map_err(|_| unavailable(format!("no answer within {} ms", self.options.timeout.as_millis())))?
            .map_err(unavailable)?;
        Ok(())
    }

    async fn record(&self, entry: ReplayEntry) -> Result<()> {
        let replay_key = [self.options.prefix.as_bytes(), &entry.key.0[..]].concat();
        let ttl_ms = entry.expires_at.saturating_sub(entry.now).max(1).saturating_mul(1000);
        let mut connection = self.connection.clone();
        let run = async {
            let mut invocation = redis::cmd("EVALSHA");
            invocation.arg(&self.script_sha);
            let args = |command: &mut redis::Cmd| {
                command
                    .arg(2)
                    .arg(&replay_key)
                    .arg(&self.fence_key)
                    .arg(ttl_ms)
                    .arg(entry.issued_at)
                    .arg(entry.now);
            };
            args(&mut invocation);
            match invocation.query_async::<(String, u64)>(&mut connection).await {
                // Redis restarted and forgot its scripts: send the text.
                Err(e) if e.code() == Some("NOSCRIPT") => {
                    let mut eval = redis::cmd("EVAL");
                    eval.arg(RECORD_SCRIPT);
                    args(&mut eval);
                    eval.query_async::<(String, u64)>(&mut connection).await
                }
                other => other,
            }
        };
        let (outcome, fence) = tokio::time::timeout(self.options.timeout, run)
            .await
            .map_err(|_| unavailable(format!("no answer within {} ms", self.options.timeout.as_millis())))?
            .map_err(unavailable)?;
        match outcome.as_str() {
            "ok" => Ok(()),
            "replay" => Err(Error::new(
                Code::ReplayDetected,
                "this proof (key and jti) was already used; make a new proof for each request",
            )),
            "restarted" => Err(restarted(fence, entry.issued_at)),
            other => Err(unavailable(format!("unexpected reply {other:?}"))),
        }
    }
}

/// Refuses a Redis that could come back from a crash with an older copy of
/// its data: the fence key would be there, recent entries would not.
async fn check_persistence(connection: &mut ConnectionManager) -> Result<()> {
    let mut setting = async |name: &str| -> Result<String> {
        let reply: Vec<String> = redis::cmd("CONFIG")
            .arg("GET")
            .arg(name)
            .query_async(connection)
            .await
            .map_err(|e| {
                unavailable(format!(
                    "cannot read {name} ({e}); set skip_persistence_check only if Redis persists nothing or syncs every write"
                ))
            })?;
        Ok(reply.get(1).cloned().unwrap_or_default())
    };
    let (save, appendonly, appendfsync) = (
        setting("save").await?,
        setting("appendonly").await?,
        setting("appendfsync").await?,
    );
    let synced_log = appendonly == "yes" && appendfsync == "always";
    let nothing_kept = appendonly == "no" && save.is_empty();
    if synced_log || nothing_kept {
        return Ok(());
    }
    Err(Error::new(
        Code::ReplayStoreUnavailable,
        format!(
            "Redis persistence (save {save:?}, appendonly {appendonly}, appendfsync {appendfsync}) can bring back an older \
             copy of the replay entries after a crash, and proofs accepted since could be replayed; run Redis without \
             persistence (save \"\", appendonly no: the store's fence then covers restarts) or with appendfsync always"
        ),
    ))
}

/// Only asynchronous: a verifier holding this store has no synchronous
/// `verify_request`.
impl AsyncReplayStore for RedisReplayStore {
    fn check_and_record_async(&self, entry: ReplayEntry) -> ReplayFuture<'_> {
        ReplayFuture::new(self.record(entry))
    }
}
