//! A replay store in Redis, shared by the replicas of one service.
//!
//! Each proof is recorded with one atomic `SET key 1 NX PX ttl`: of two
//! replicas seeing the same proof, exactly one gets `OK`. Any error or
//! timeout answers `replay.store_unavailable`: the request is refused, never
//! waved through. The store refuses to start when Redis could evict live
//! entries (any `maxmemory-policy` but `noeviction`).

use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use super::replay::{ReplayKey, ReplayOutcome, ReplayStore};
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
}

impl Default for RedisReplayOptions {
    fn default() -> Self {
        RedisReplayOptions {
            prefix: "kb:replay:".into(),
            timeout: Duration::from_millis(250),
            skip_eviction_policy_check: false,
        }
    }
}

/// Replay detection in Redis.
#[derive(Clone)]
pub struct RedisReplayStore {
    connection: ConnectionManager,
    options: RedisReplayOptions,
}

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
    /// Connects to `url` (`redis://host:port/db`) and checks that Redis will
    /// not evict live entries.
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
        Ok(RedisReplayStore { connection, options })
    }

    async fn record(&self, key: ReplayKey, ttl_ms: u64) -> Result<()> {
        let mut redis_key = Vec::with_capacity(self.options.prefix.len() + 32);
        redis_key.extend_from_slice(self.options.prefix.as_bytes());
        redis_key.extend_from_slice(&key.0);
        let mut connection = self.connection.clone();
        let command = redis::cmd("SET")
            .arg(redis_key)
            .arg(1u8)
            .arg("NX")
            .arg("PX")
            .arg(ttl_ms)
            .to_owned();
        let reply: Option<String> = tokio::time::timeout(self.options.timeout, command.query_async(&mut connection))
            .await
            .map_err(|_| unavailable(format!("no answer within {} ms", self.options.timeout.as_millis())))?
            .map_err(unavailable)?;
        match reply.as_deref() {
            Some("OK") => Ok(()),
            None => Err(Error::new(
                Code::ReplayDetected,
                "this proof (key and jti) was already used; make a new proof for each request",
            )),
            Some(other) => Err(unavailable(format!("unexpected reply {other:?}"))),
        }
    }
}

impl ReplayStore for RedisReplayStore {
    fn check_and_record(&self, key: ReplayKey, expires_at: u64, now: u64) -> ReplayOutcome<'_> {
        let ttl_ms = expires_at.saturating_sub(now).max(1).saturating_mul(1000);
        ReplayOutcome::Pending(Box::pin(self.record(key, ttl_ms)))
    }
}
