//! An issuer's key set fetched from its URL, cached, refreshed in the
//! background, refetched (rate-limited) on an unknown kid, and kept when the
//! issuer is unreachable.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::{KeySource, RefreshFuture};
use crate::error::{Code, Error, Result, err};
use crate::key::{KeySet, MAX_KEYSET_SIZE};

/// Options of [`HttpKeys`], with their defaults.
#[derive(Clone, Debug)]
pub struct HttpKeysOptions {
    /// Refresh interval when the response has no usable `Cache-Control: max-age`. Default 5 min.
    pub default_refresh: Duration,
    /// Lower bound on the refresh interval, whatever max-age says. Default 30 s.
    pub min_refresh: Duration,
    /// Upper bound on the refresh interval. Default 1 h.
    pub max_refresh: Duration,
    /// At most one refetch per this interval because of unknown kids. Default 30 s.
    pub unknown_kid_interval: Duration,
    /// Timeout of one fetch. Default 5 s.
    pub timeout: Duration,
    /// Largest response body accepted. Default 64 KiB.
    pub max_body: usize,
    /// Allow plain `http://` to hosts other than loopback. Default false.
    pub allow_insecure_http: bool,
    /// Where to keep the last good set, so a restart while the issuer is
    /// down still has keys. The file records the URL it was fetched from and
    /// is used only for that URL. Default: none.
    pub cache_file: Option<PathBuf>,
}

impl Default for HttpKeysOptions {
    fn default() -> Self {
        HttpKeysOptions {
            default_refresh: Duration::from_secs(300),
            min_refresh: Duration::from_secs(30),
            max_refresh: Duration::from_secs(3600),
            unknown_kid_interval: Duration::from_secs(30),
            timeout: Duration::from_secs(5),
            max_body: MAX_KEYSET_SIZE,
            allow_insecure_http: false,
            cache_file: None,
        }
    }
}

struct Inner {
    url: reqwest::Url,
    client: reqwest::Client,
    options: HttpKeysOptions,
    current: RwLock<Arc<KeySet>>,
    // When the last fetch for an unknown kid was started.
    last_unknown_kid_fetch: Mutex<Option<Instant>>,
    // Bumped after each fetch attempt completes; waiters watch it.
    generation: watch::Sender<u64>,
    fetching: Mutex<bool>,
    runtime: tokio::runtime::Handle,
    stats: Mutex<FetchStats>,
}

/// What the source has seen, for health checks and metrics.
#[derive(Clone, Debug, Default)]
pub struct FetchStats {
    /// Successful fetches.
    pub successes: u64,
    /// Failed fetches (network, status, size, parse or rollback).
    pub failures: u64,
    /// The last failure's message.
    pub last_error: Option<String>,
    /// When the current set was fetched.
    pub last_success: Option<Instant>,
    /// The source started with the set of its cache file, the issuer being
    /// unreachable (until a fetch succeeds, `last_success` stays `None`).
    pub loaded_from_cache: bool,
}

/// Keys fetched from an issuer's key-set URL.
#[derive(Clone)]
pub struct HttpKeys {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for HttpKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "HttpKeys({})", self.inner.url)
    }
}

fn check_url(url: &str, options: &HttpKeysOptions) -> Result<reqwest::Url> {
    if options.min_refresh > options.max_refresh || options.timeout.is_zero() || options.max_body == 0 {
        return err(
            Code::InputMalformed,
            "key-set options: min_refresh must not exceed max_refresh, and timeout and max_body must not be zero",
        );
    }
    let parsed =
        reqwest::Url::parse(url).map_err(|e| Error::new(Code::InputMalformed, format!("key-set URL {url:?}: {e}")))?;
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return err(Code::InputMalformed, "a key-set URL must not contain userinfo");
    }
    let host = parsed.host_str().unwrap_or_default();
    let loopback = host == "localhost"
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    match parsed.scheme() {
        "https" => Ok(parsed),
        "http" if loopback || options.allow_insecure_http => Ok(parsed),
        "http" => err(
            Code::InputMalformed,
            format!("key-set URL {url} is plain http to a remote host; use https (or allow_insecure_http)"),
        ),
        other => err(
            Code::InputMalformed,
            format!("key-set URL scheme {other:?} is not http(s)"),
        ),
    }
}

/// Parses `Cache-Control` for `max-age`; `no-store`/`no-cache` mean "as soon as allowed".
fn cache_lifetime(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let value = headers.get(reqwest::header::CACHE_CONTROL)?.to_str().ok()?;
    let mut max_age = None;
    for directive in value.split(',').map(str::trim) {
        let lower = directive.to_ascii_lowercase();
        if lower == "no-store" || lower == "no-cache" {
            return Some(Duration::ZERO);
        }
        if let Some(v) = lower.strip_prefix("max-age=") {
            max_age = v.trim_matches('"').parse::<u64>().ok().map(Duration::from_secs);
        }
    }
    max_age
}

/// The cache file: a CBOR array of the URL the set came from and the
/// key-set document (with its sequence), so a file left by another issuer's URL is never trusted.
fn cache_file_bytes(url: &str, set: &KeySet) -> Vec<u8> {
    let mut out = Vec::new();
    crate::cbor::write_array(&mut out, 2);
    crate::cbor::write_text(&mut out, url);
    crate::cbor::write_bytes(&mut out, &set.to_cbor());
    out
}

/// The key set of a cache file, if the file is well formed and was written
/// for `url`.
fn read_cache_file(bytes: &[u8], url: &str) -> Option<KeySet> {
    let read = || {
        crate::cbor::validate(bytes).ok()?;
        let mut reader = crate::cbor::Reader::new(bytes);
        if reader.array()? != 2 {
            return None;
        }
        let written_for = reader.text()?;
        let set = KeySet::from_cbor(reader.bytes()?).ok()?;
        reader.is_at_end().then_some((written_for, set))
    };
    match read() {
        Some((written_for, set)) if written_for == url => Some(set),
        Some((written_for, _)) => {
            tracing::warn!(
                url,
                written_for,
                "the key-set cache file was written for another URL; ignoring it"
            );
            None
        }
        None => {
            // Also a file of an older keybound (a bare COSE_KeySet, not tied
            // to a URL): never trusted, replaced by the next good fetch.
            tracing::warn!(url, "the key-set cache file is unreadable; ignoring it");
            None
        }
    }
}

impl Inner {
    /// One fetch. On success the set is swapped in; on failure the old set stays.
    async fn fetch(&self) -> Result<Duration> {
        // Install the new set before waking the requests waiting on an
        // unknown kid, so their retry sees it.
        let result = match self.fetch_once().await {
            Ok((set, lifetime)) => self.install(set).map(|set| (set, lifetime)),
            Err(e) => Err(e),
        };
        let mut stats = self.stats.lock().unwrap_or_else(|p| p.into_inner());
        match &result {
            Ok((set, _)) => {
                stats.successes += 1;
                stats.last_success = Some(Instant::now());
                if let Some(path) = &self.options.cache_file {
                    // Best effort: a write failure must not stop verification.
                    let tmp = path.with_extension("tmp");
                    if std::fs::write(&tmp, cache_file_bytes(self.url.as_str(), set)).is_ok() {
                        let _ = std::fs::rename(&tmp, path);
                    }
                }
            }
            Err(e) => {
                stats.failures += 1;
                stats.last_error = Some(e.to_string());
                tracing::warn!(url = %self.url, error = %e, "key-set fetch failed; keeping the last good set");
            }
        }
        drop(stats);
        self.generation.send_modify(|g| *g += 1);
        result.map(|(_, lifetime)| lifetime)
    }

    /// Swaps `set` in unless its sequence is lower than the current one's
    /// (a rollback: catalog FD-05); checked under the lock, so two fetches
    /// finishing together cannot install the older set last.
    fn install(&self, set: KeySet) -> Result<Arc<KeySet>> {
        let mut current = self.current.write().unwrap_or_else(|p| p.into_inner());
        set.may_replace(&current)
            .map_err(|e| Error::new(e.code(), format!("key set from {}: {}", self.url, e.message())))?;
        let set = Arc::new(set);
        *current = set.clone();
        Ok(set)
    }

    async fn fetch_once(&self) -> Result<(KeySet, Duration)> {
        let unavailable = |what: String| Error::new(Code::KeySetInvalid, format!("key set from {}: {what}", self.url));
        let mut response = self
            .client
            .get(self.url.clone())
            .header(reqwest::header::ACCEPT, "application/cbor")
            .send()
            .await
            .map_err(|e| unavailable(format!("request failed: {e}")).with_source(e))?;
        if !response.status().is_success() {
            return Err(unavailable(format!("HTTP status {}", response.status())));
        }
        if response
            .content_length()
            .is_some_and(|n| n > self.options.max_body as u64)
        {
            return Err(unavailable(format!("body larger than {} bytes", self.options.max_body)));
        }
        let lifetime = cache_lifetime(response.headers());
        let mut body = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| unavailable(format!("reading the body: {e}")).with_source(e))?
        {
            if body.len() + chunk.len() > self.options.max_body {
                return Err(unavailable(format!("body larger than {} bytes", self.options.max_body)));
            }
            body.extend_from_slice(&chunk);
        }
        let set = KeySet::from_cbor(&body).map_err(|e| unavailable(format!("{e}")))?;
        let lifetime = lifetime
            .unwrap_or(self.options.default_refresh)
            .clamp(self.options.min_refresh, self.options.max_refresh);
        Ok((set, lifetime))
    }
}

impl HttpKeys {
    /// Whether `url` is a key-set URL these options allow (http(s), no
    /// userinfo, plain http only to loopback unless allowed), without
    /// fetching it: for configuration that is checked before it is used.
    pub fn check_url(url: &str, options: &HttpKeysOptions) -> Result<()> {
        check_url(url, options).map(|_| ())
    }

    /// Fetches the key set at `url` and starts refreshing it in the
    /// background (the task stops when the last clone is dropped). If the
    /// first fetch fails, the cache file (if configured) is used; if there is
    /// none either, this fails.
    pub async fn start(url: &str, options: HttpKeysOptions) -> Result<Self> {
        let url = check_url(url, &options)?;
        let client = reqwest::Client::builder()
            .timeout(options.timeout)
            .connect_timeout(options.timeout)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| Error::new(Code::KeySetInvalid, format!("cannot build an HTTP client: {e}")))?;
        let (generation, _) = watch::channel(0);
        let inner = Arc::new(Inner {
            url,
            client,
            current: RwLock::new(Arc::new(KeySet::new())),
            last_unknown_kid_fetch: Mutex::new(None),
            generation,
            fetching: Mutex::new(false),
            runtime: tokio::runtime::Handle::current(),
            stats: Mutex::new(FetchStats::default()),
            options,
        });
        // The cache file is loaded first, so that its sequence is the floor
        // of the first fetch too: a restart does not forget a newer set.
        let cached = inner
            .options
            .cache_file
            .as_ref()
            .and_then(|p| std::fs::read(p).ok())
            .and_then(|b| read_cache_file(&b, inner.url.as_str()));
        let have_cache = cached.is_some();
        if let Some(set) = cached {
            *inner.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(set);
        }
        let first = match inner.fetch().await {
            Ok(lifetime) => lifetime,
            Err(e) if have_cache => {
                tracing::warn!(url = %inner.url, error = %e, "no usable key set from the issuer at start; using the cached one");
                inner.stats.lock().unwrap_or_else(|p| p.into_inner()).loaded_from_cache = true;
                inner.options.min_refresh
            }
            Err(e) => return Err(e),
        };
        tokio::spawn(refresh_loop(Arc::downgrade(&inner), first));
        Ok(HttpKeys { inner })
    }

    /// Fetch statistics.
    pub fn stats(&self) -> FetchStats {
        self.inner.stats.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Fetches now (ignoring the schedule); the old set stays on failure.
    pub async fn refresh(&self) -> Result<()> {
        self.inner.fetch().await.map(|_| ())
    }
}

async fn refresh_loop(inner: Weak<Inner>, mut wait: Duration) {
    let mut backoff = Duration::from_secs(1);
    loop {
        tokio::time::sleep(wait).await;
        let Some(inner) = inner.upgrade() else { return };
        match inner.fetch().await {
            Ok(lifetime) => {
                backoff = Duration::from_secs(1);
                wait = lifetime;
            }
            Err(_) => {
                // Retry sooner than the schedule, backing off up to min_refresh.
                backoff = (backoff * 2).min(inner.options.min_refresh);
                wait = backoff;
            }
        }
    }
}

impl KeySource for HttpKeys {
    fn key_set(&self) -> Arc<KeySet> {
        self.inner.current.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn refresh_for_unknown_kid(&self) -> Option<RefreshFuture<'_>> {
        let inner = &self.inner;
        let mut receiver = inner.generation.subscribe();
        let mut fetching = inner.fetching.lock().unwrap_or_else(|p| p.into_inner());
        if !*fetching {
            let mut last = inner.last_unknown_kid_fetch.lock().unwrap_or_else(|p| p.into_inner());
            if last.is_some_and(|t| t.elapsed() < inner.options.unknown_kid_interval) {
                return None;
            }
            *last = Some(Instant::now());
            *fetching = true;
            let task_inner = inner.clone();
            inner.runtime.spawn(async move {
                let _ = task_inner.fetch().await;
                *task_inner.fetching.lock().unwrap_or_else(|p| p.into_inner()) = false;
            });
        }
        drop(fetching);
        let timeout = inner.options.timeout + Duration::from_secs(1);
        Some(Box::pin(async move {
            let _ = tokio::time::timeout(timeout, receiver.changed()).await;
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_control_parsing() {
        let mut h = reqwest::header::HeaderMap::new();
        assert_eq!(cache_lifetime(&h), None);
        h.insert(reqwest::header::CACHE_CONTROL, "public, max-age=120".parse().unwrap());
        assert_eq!(cache_lifetime(&h), Some(Duration::from_secs(120)));
        h.insert(reqwest::header::CACHE_CONTROL, "no-store".parse().unwrap());
        assert_eq!(cache_lifetime(&h), Some(Duration::ZERO));
    }

    #[test]
    fn url_rules() {
        let o = HttpKeysOptions::default();
        assert!(check_url("https://issuer.example/.well-known/keybound/keys", &o).is_ok());
        assert!(check_url("http://127.0.0.1:8080/keys", &o).is_ok());
        assert!(check_url("http://issuer.example/keys", &o).is_err());
        assert!(check_url("https://user:pw@issuer.example/keys", &o).is_err());
        assert!(check_url("ftp://issuer.example/keys", &o).is_err());
    }
}
