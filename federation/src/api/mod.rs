//! The researcher, admin, operator and auditor HTTP API (axum), served by every committee node.
//!
//! A thin I/O layer: requests are authenticated ([`auth`]), rate-limited and size-limited here,
//! then become ledger entries (queries, registrations, budgets) proposed through the node's
//! [`NodeHandle`], reads of the applied ledger, or writes to this hospital's device store. The
//! private query protocol itself runs in the node's query loop ([`crate::node::Driver`]), never
//! in a request handler.
//!
//! * Every endpoint but `POST /api/v1/login`, `/health`, `/ready` and the OpenAPI document needs
//!   a bearer token; `/metrics` also takes the operator's static metrics token.
//! * Errors are uniform: `{"error": {"code": "...", "message": "..."}}` with a 4xx/5xx status.
//! * Bodies are read up to a limit (1 MiB, device uploads [`ApiConfig::max_upload_bytes`]); a
//!   larger body gets 413 and changes nothing.
//! * Tokens, passwords and request bodies are never logged.

pub mod accounts;
pub mod auth;
pub mod client;
pub(crate) mod handlers;
pub mod metrics;
pub mod openapi;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use medtech_ledger::raft::node::NodeHandle;
use serde_json::json;

use crate::data::DeviceStore;
use crate::node::QueryIndex;
use crate::protocol::CommitteeView;
use accounts::Accounts;
use auth::Claims;

/// Limits and lifetimes of the API.
#[derive(Clone, Debug)]
pub struct ApiConfig {
    /// Session token lifetime.
    pub token_ttl: Duration,
    /// Largest device upload, bytes.
    pub max_upload_bytes: usize,
    /// Largest other request body, bytes.
    pub max_body_bytes: usize,
    /// Requests per second each user may sustain.
    pub rate_per_second: f64,
    /// Burst each user may spend at once.
    pub rate_burst: f64,
    /// Login attempts per minute per (client address, username).
    pub logins_per_minute: f64,
    /// Login attempts per minute per client address, whatever the username.
    pub logins_per_address_per_minute: f64,
    /// Login attempts per second at this member from everyone (the burst is twice this).
    pub logins_per_second: f64,
    /// Password hashes (Argon2id, 19 MiB each) run at once; more wait their turn.
    pub max_concurrent_hashes: usize,
    /// Reverse proxies whose `X-Forwarded-For` names the client; from any other peer the
    /// header is ignored and the socket address is the client's.
    pub trusted_proxies: Vec<std::net::IpAddr>,
    /// Longest `wait` a result poll may ask for.
    pub max_wait: Duration,
    /// A static bearer token `/metrics` also accepts (for Prometheus), if set.
    pub metrics_token: Option<zeroize::Zeroizing<String>>,
    /// Mark the dashboard's session cookies `Secure` (sent over HTTPS only; browsers also send
    /// them to `http://localhost`). Turn off only for plain-HTTP development on other hosts.
    pub cookie_secure: bool,
    /// Queries one researcher may have open at once (submitted, not yet released or failed);
    /// a submission beyond it is answered 429 with `Retry-After` (issue 24 §4).
    pub max_queries_in_flight: usize,
    /// Longest time a request may take before it is answered 503 `request_timeout` (issue 28
    /// §7); longer than [`ApiConfig::max_wait`] plus a margin, so a full result poll fits.
    pub request_timeout: Duration,
}

/// The default of [`ApiConfig::request_timeout`].
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(120);

/// The default of [`ApiConfig::max_queries_in_flight`].
pub const DEFAULT_MAX_QUERIES_IN_FLIGHT: usize = 4;

/// Seconds a researcher over the in-flight limit is asked to wait before trying again.
pub const IN_FLIGHT_RETRY_AFTER_S: u64 = 5;

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            token_ttl: Duration::from_secs(15 * 60),
            max_upload_bytes: 512 << 20,
            max_body_bytes: 1 << 20,
            rate_per_second: 20.0,
            rate_burst: 60.0,
            logins_per_minute: 10.0,
            logins_per_address_per_minute: 30.0,
            logins_per_second: 20.0,
            max_concurrent_hashes: 2,
            trusted_proxies: Vec::new(),
            max_wait: Duration::from_secs(60),
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            metrics_token: None,
            cookie_secure: true,
            max_queries_in_flight: DEFAULT_MAX_QUERIES_IN_FLIGHT,
        }
    }
}

/// What the handlers work against: this member's ledger node, committee, store and accounts.
pub struct ApiState {
    /// The ledger node.
    pub node: NodeHandle,
    /// The committee as the protocol sees it.
    pub view: CommitteeView,
    /// This hospital's devices.
    pub store: Arc<RwLock<DeviceStore>>,
    /// The queries this member's query loop has seen.
    pub index: QueryIndex,
    /// This node's local accounts.
    pub accounts: Accounts,
    /// Limits.
    pub config: ApiConfig,
    /// Counters for `/metrics`.
    pub metrics: metrics::Metrics,
    limiter: RateLimiter,
    /// Query ids each researcher's submissions through this member are proposing now (not yet
    /// in [`ApiState::index`]), so that concurrent submissions cannot pass the in-flight limit
    /// together.
    submitting: Mutex<HashMap<String, std::collections::BTreeSet<(Instant, String)>>>,
    hashes: Arc<tokio::sync::Semaphore>,
    hashing: Arc<HashGauge>,
    started: Instant,
}

/// A query reserved against a researcher's in-flight limit ([`ApiState::reserve_query`]):
/// released on drop unless [`InFlight::admitted`] was called.
pub(crate) struct InFlight<'a> {
    api: &'a ApiState,
    researcher: String,
    id: String,
    at: Instant,
    admitted: bool,
}

impl InFlight<'_> {
    /// The ledger admitted the query: it stays counted (until the index shows it).
    pub(crate) fn admitted(mut self) {
        self.admitted = true;
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        if self.admitted {
            return;
        }
        let mut submitting = match self.api.submitting.lock() {
            Ok(s) => s,
            Err(p) => p.into_inner(),
        };
        if let Some(ids) = submitting.get_mut(&self.researcher) {
            ids.remove(&(self.at, self.id.clone()));
            if ids.is_empty() {
                submitting.remove(&self.researcher);
            }
        }
    }
}

/// Password hashes running now, and the most seen at once.
#[derive(Default)]
pub(crate) struct HashGauge {
    now: std::sync::atomic::AtomicUsize,
    peak: std::sync::atomic::AtomicUsize,
}

impl HashGauge {
    /// The most password hashes that ran at once.
    pub(crate) fn peak(&self) -> usize {
        self.peak.load(std::sync::atomic::Ordering::Relaxed)
    }
}

impl ApiState {
    /// The state for `node`'s API.
    pub fn new(
        node: NodeHandle,
        view: CommitteeView,
        store: Arc<RwLock<DeviceStore>>,
        index: QueryIndex,
        accounts: Accounts,
        config: ApiConfig,
    ) -> Self {
        ApiState {
            node,
            view,
            store,
            index,
            accounts,
            metrics: metrics::Metrics::default(),
            limiter: RateLimiter::default(),
            submitting: Mutex::default(),
            hashes: Arc::new(tokio::sync::Semaphore::new(
                config.max_concurrent_hashes.max(1),
            )),
            hashing: Arc::default(),
            started: Instant::now(),
            config,
        }
    }

    /// Whether `seen` holds of this member's ledger state, once the member has applied what was
    /// committed when the request came (read-your-writes through any member): a change made or
    /// approved at another member a moment ago is not answered "not found" here. The leader
    /// confirms it is current with a quorum; a follower, which cannot, gives replication up to
    /// a second.
    pub(crate) async fn caught_up(
        &self,
        seen: impl Fn(&medtech_ledger::state::LedgerState) -> bool,
    ) -> Result<bool, ApiError> {
        let now = |api: &ApiState| -> Result<bool, ApiError> { Ok(seen(api.node.read()?.state())) };
        if now(self)? {
            return Ok(true);
        }
        if self.node.linearizable().await.is_ok() {
            return now(self);
        }
        let grace = Instant::now() + Duration::from_secs(1);
        while Instant::now() < grace {
            tokio::time::sleep(Duration::from_millis(20)).await;
            if now(self)? {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Reserves query `id` for `researcher` against [`ApiConfig::max_queries_in_flight`]: the
    /// researcher's open queries in this member's index (submitted through any member) plus
    /// the ones being proposed through this member now. Over the limit: 429 with `Retry-After`
    /// and nothing is proposed (so nothing is charged). Drop the reservation unless the
    /// proposal was admitted ([`InFlight::admitted`]); an admitted one is counted until the
    /// index shows it (then the index counts it until it ends).
    pub(crate) fn reserve_query(
        &self,
        researcher: &str,
        id: &str,
    ) -> Result<InFlight<'_>, ApiError> {
        let limit = self.config.max_queries_in_flight.max(1);
        let mut submitting = match self.submitting.lock() {
            Ok(s) => s,
            Err(p) => p.into_inner(),
        };
        let open_in_index: usize;
        {
            let index = match self.index.read() {
                Ok(i) => i,
                Err(p) => p.into_inner(),
            };
            // Proposals the index now shows are counted there.
            if let Some(ids) = submitting.get_mut(researcher) {
                ids.retain(|(_, q)| !index.contains_key(q));
            }
            open_in_index = index
                .values()
                .filter(|q| q.researcher == researcher && q.outcome.is_none())
                .count();
        }
        let now = Instant::now();
        let proposing = submitting.entry(researcher.to_owned()).or_default();
        // An admitted proposal the index never showed (it cannot happen in a running node)
        // stops counting after a minute rather than lock the researcher out.
        proposing.retain(|(at, _)| now.duration_since(*at) < Duration::from_secs(60));
        let open = open_in_index + proposing.len();
        if open >= limit {
            let mut e = ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "too_many_queries_in_flight",
                format!(
                    "{open} of your queries are in flight (submitted, not yet released or \
                     failed); at most {limit} may be: retry when one has ended"
                ),
            );
            e.retry_after = Some(IN_FLIGHT_RETRY_AFTER_S);
            return Err(e);
        }
        proposing.insert((now, id.to_owned()));
        Ok(InFlight {
            api: self,
            researcher: researcher.to_owned(),
            id: id.to_owned(),
            at: now,
            admitted: false,
        })
    }

    /// The most password hashes that ran at once on this member.
    pub(crate) fn hashes_peak(&self) -> usize {
        self.hashing.peak()
    }

    /// Runs `f` (an account operation that hashes a password) off the reactor, at most
    /// [`ApiConfig::max_concurrent_hashes`] at once: a login flood waits here instead of
    /// holding 19 MiB per attempt.
    pub(crate) async fn hashing<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, ApiError> {
        use std::sync::atomic::Ordering::Relaxed;
        let permit = Arc::clone(&self.hashes)
            .acquire_owned()
            .await
            .map_err(ApiError::internal)?;
        let gauge = Arc::clone(&self.hashing);
        tokio::task::spawn_blocking(move || {
            let now = gauge.now.fetch_add(1, Relaxed) + 1;
            gauge.peak.fetch_max(now, Relaxed);
            let r = f();
            gauge.now.fetch_sub(1, Relaxed);
            drop(permit);
            r
        })
        .await
        .map_err(ApiError::internal)
    }

    /// Charges a login attempt by `client` for `username`: per (client, username), per client
    /// and for everyone.
    pub(crate) fn charge_login(&self, client: &str, username: &str) -> Result<(), ApiError> {
        let c = &self.config;
        self.limiter
            .charge("login:*", c.logins_per_second, c.logins_per_second * 2.0)?;
        self.limiter.charge(
            &format!("login:{client}"),
            c.logins_per_address_per_minute / 60.0,
            c.logins_per_address_per_minute,
        )?;
        self.limiter.charge(
            &format!("login:{client}:{username}"),
            c.logins_per_minute / 60.0,
            c.logins_per_minute,
        )
    }

    /// Checks a token: its signature and lifetime against the committee
    /// ([`auth::verify_token`]) and, when this member issued it, against the account here:
    /// it must still exist and be enabled, and its password must not have changed since.
    pub(crate) fn verify(&self, token: &str) -> Result<Claims, ApiError> {
        let invalid = |m: String| ApiError::new(StatusCode::UNAUTHORIZED, "invalid_token", m);
        let claims = auth::verify_token(&self.node, token, self.config.token_ttl)
            .map_err(|e| invalid(e.to_string()))?;
        if claims.iss == self.node.name() {
            match self.accounts.get(&claims.sub) {
                Some(a) if a.enabled && a.password_generation == claims.pwg => {}
                Some(a) if a.enabled => {
                    return Err(invalid(
                        "the password was changed after this token was issued; sign in again"
                            .into(),
                    ))
                }
                _ => {
                    return Err(invalid(format!(
                        "account {:?} is disabled or gone on {}",
                        claims.sub, claims.iss
                    )))
                }
            }
        }
        Ok(claims)
    }

    /// Authenticates the request's bearer token, requires one of `roles`, and charges the
    /// user's rate limit. A token that must change its password is refused here.
    pub(crate) fn user(
        &self,
        headers: &HeaderMap,
        roles: &[auth::Role],
    ) -> Result<Claims, ApiError> {
        let claims = self.user_changing_password(headers, roles)?;
        if claims.mcp {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "password_change_required",
                "change the generated password first (POST /api/v1/password), then sign in again",
            ));
        }
        Ok(claims)
    }

    /// [`Self::user`], also for a token that must change its password: only for the password
    /// change itself and `/api/v1/me`.
    pub(crate) fn user_changing_password(
        &self,
        headers: &HeaderMap,
        roles: &[auth::Role],
    ) -> Result<Claims, ApiError> {
        let token = bearer(headers).ok_or_else(|| {
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthenticated",
                "this endpoint needs `Authorization: Bearer <token>` (POST /api/v1/login)",
            )
        })?;
        let claims = self.verify(token)?;
        if !roles.contains(&claims.role) {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                format!(
                    "this endpoint is for {}; you are signed in as {}",
                    roles
                        .iter()
                        .map(|r| r.as_str())
                        .collect::<Vec<_>>()
                        .join(" or "),
                    claims.role.as_str()
                ),
            ));
        }
        self.limiter.charge(
            &format!("user:{}", claims.sub),
            self.config.rate_per_second,
            self.config.rate_burst,
        )?;
        Ok(claims)
    }
}

/// The `Authorization: Bearer` token, if present.
fn bearer(headers: &HeaderMap) -> Option<&str> {
    let v = headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let t = v
        .strip_prefix("Bearer ")
        .or_else(|| v.strip_prefix("bearer "))?;
    Some(t.trim())
}

/// A uniform JSON error.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    retry_after: Option<u64>,
    detail: Option<(&'static str, serde_json::Value)>,
}

impl ApiError {
    /// An error with a status, a stable machine-readable code and a message for people.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            retry_after: None,
            detail: None,
        }
    }

    /// Adds one machine-readable field to the error object (beside `code` and `message`).
    pub fn with_detail(mut self, key: &'static str, value: serde_json::Value) -> Self {
        self.detail = Some((key, value));
        self
    }

    /// Its status.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// Its message for people.
    pub fn message(&self) -> String {
        self.message.clone()
    }

    pub(crate) fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    pub(crate) fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    pub(crate) fn internal(message: impl std::fmt::Display) -> Self {
        // The message is logged here and not sent: internal errors may name paths.
        tracing::error!("internal error: {message}");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error (see the node's log)",
        )
    }

    pub(crate) fn unavailable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message)
    }
}

/// The media type of every error response (RFC 9457).
pub const PROBLEM_JSON: &str = "application/problem+json";

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        // RFC 9457 problem details: `type` names the problem by its stable code (a tag URI:
        // an identifier, not a page to fetch), `title` is the status's phrase, `detail` the
        // message for people; `code` and any detail (e.g. `min_epsilon`) are extension
        // members. `error` repeats code, message and detail in the shape clients read before
        // (kept for them; docs/api.md).
        let mut error = json!({ "code": self.code, "message": self.message });
        let mut problem = json!({
            "type": format!("tag:medtech-chain,2026:problem:{}", self.code),
            "title": self.status.canonical_reason().unwrap_or("Error"),
            "status": self.status.as_u16(),
            "detail": self.message,
            "code": self.code,
        });
        if let Some((key, value)) = self.detail {
            for obj in [error.as_object_mut(), problem.as_object_mut()]
                .into_iter()
                .flatten()
            {
                obj.insert(key.to_owned(), value.clone());
            }
        }
        if let Some(obj) = problem.as_object_mut() {
            obj.insert("error".into(), error);
        }
        let mut r = (
            self.status,
            [(
                axum::http::header::CONTENT_TYPE,
                axum::http::HeaderValue::from_static(PROBLEM_JSON),
            )],
            Json(problem),
        )
            .into_response();
        if let Some(s) = self.retry_after {
            if let Ok(v) = axum::http::HeaderValue::from_str(&s.to_string()) {
                r.headers_mut().insert(axum::http::header::RETRY_AFTER, v);
            }
        }
        r
    }
}

impl From<medtech_ledger::Error> for ApiError {
    fn from(e: medtech_ledger::Error) -> Self {
        match e {
            medtech_ledger::Error::Unavailable(m) => ApiError::unavailable(m),
            other => ApiError::internal(other),
        }
    }
}

/// Reads a body of at most `limit` bytes (413 beyond).
pub(crate) async fn read_body(body: Body, limit: usize) -> Result<axum::body::Bytes, ApiError> {
    axum::body::to_bytes(body, limit).await.map_err(|_| {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!("the request body is larger than {limit} bytes (or could not be read)"),
        )
    })
}

/// Parses a JSON body into `T`, with the parser's message on failure.
pub(crate) fn parse_json<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(bytes)
        .map_err(|e| ApiError::bad_request("invalid_json", format!("request body: {e}")))
}

/// Token buckets keyed by user or by (address, username) for logins.
#[derive(Default)]
struct RateLimiter {
    buckets: Mutex<HashMap<String, (f64, Instant)>>,
}

impl RateLimiter {
    fn charge(&self, key: &str, per_second: f64, burst: f64) -> Result<(), ApiError> {
        let now = Instant::now();
        let mut b = match self.buckets.lock() {
            Ok(b) => b,
            Err(p) => p.into_inner(),
        };
        if b.len() > 100_000 {
            // Forget idle buckets (a full bucket is the same as none).
            b.retain(|_, (_, at)| now.duration_since(*at).as_secs_f64() * per_second < burst);
        }
        let (tokens, at) = b.entry(key.to_owned()).or_insert((burst, now));
        *tokens = (*tokens + now.duration_since(*at).as_secs_f64() * per_second).min(burst);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else {
            let wait = ((1.0 - *tokens) / per_second).ceil().max(1.0) as u64;
            let mut e = ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                format!("too many requests; retry in {wait} s"),
            );
            e.retry_after = Some(wait);
            Err(e)
        }
    }
}

/// The request id header: taken from the request when it is a sane token (a proxy's or a
/// client's), otherwise generated; echoed on the response and logged with the request.
pub const REQUEST_ID: &str = "x-request-id";

/// `X-Request-Id` of `headers` if it is 1–64 characters of `[A-Za-z0-9._-]` (anything else
/// could forge log lines or carry a secret into the logs), else a fresh random id.
fn request_id(headers: &HeaderMap) -> String {
    headers
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| {
            (1..=64).contains(&v.len())
                && v.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        })
        .map_or_else(
            || {
                let mut id = [0u8; 12];
                rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut id);
                hex::encode(id)
            },
            str::to_owned,
        )
}

/// Counts and logs every request (method, route, status, time, request id; never headers or
/// bodies), gives it an id (`X-Request-Id`, echoed on the response), and answers 503
/// `request_timeout` when it takes longer than [`ApiConfig::request_timeout`] (the handler is
/// dropped; a submission it was proposing may still commit, which a retry with the same
/// `Idempotency-Key` finds).
async fn observe(State(api): State<Arc<ApiState>>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or("(unmatched)", |m| m.as_str())
        .to_owned();
    let method = req.method().clone();
    let id = request_id(req.headers());
    let t0 = Instant::now();
    let mut resp = match tokio::time::timeout(api.config.request_timeout, next.run(req)).await {
        Ok(resp) => resp,
        Err(_) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "request_timeout",
            format!(
                "the request took longer than {} s; retry (a submission: with the same \
                 Idempotency-Key)",
                api.config.request_timeout.as_secs()
            ),
        )
        .into_response(),
    };
    if let Ok(v) = axum::http::HeaderValue::from_str(&id) {
        resp.headers_mut().insert(REQUEST_ID, v);
    }
    let status = resp.status().as_u16();
    let elapsed = t0.elapsed();
    api.metrics
        .observe(method.as_str(), &route, status, elapsed);
    tracing::info!(
        target: "medtech::api",
        method = %method,
        route = %route,
        status,
        ms = elapsed.as_secs_f64() * 1e3,
        request_id = %id,
        "request"
    );
    resp
}

/// The router for `state`.
pub fn router(state: Arc<ApiState>) -> axum::Router {
    handlers::routes()
        .merge(crate::web::routes())
        .fallback(|| async { ApiError::not_found("no such endpoint (see /api/v1/openapi.json)") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "this endpoint does not take that method",
            )
        })
        .layer(axum::middleware::from_fn_with_state(
            Arc::clone(&state),
            observe,
        ))
        .with_state(state)
}

/// A running API server.
pub struct ApiServer {
    /// Where it listens.
    pub addr: SocketAddr,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

impl ApiServer {
    /// Serves `state` on `listener` until [`ApiServer::shutdown`].
    pub fn spawn(state: Arc<ApiState>, listener: tokio::net::TcpListener) -> std::io::Result<Self> {
        let addr = listener.local_addr()?;
        let (stop, rx) = tokio::sync::oneshot::channel::<()>();
        let app = router(state).into_make_service_with_connect_info::<SocketAddr>();
        let task = tokio::spawn(async move {
            let served = axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = rx.await;
                })
                .await;
            if let Err(e) = served {
                tracing::error!("API server on {addr}: {e}");
            }
        });
        Ok(ApiServer { addr, stop, task })
    }

    /// Stops accepting requests and waits for the server task.
    pub async fn shutdown(self) {
        let _ = self.stop.send(());
        let _ = self.task.await;
    }
}

/// The client address of a request (for login rate limits): the socket's peer, or, when the
/// peer is one of `trusted` proxies, the last address in `X-Forwarded-For` that is not itself a
/// trusted proxy (a client can prepend anything to the header; the proxies append).
pub(crate) fn peer(
    ci: Option<&ConnectInfo<SocketAddr>>,
    headers: &HeaderMap,
    trusted: &[std::net::IpAddr],
) -> String {
    let Some(socket) = ci.map(|c| c.0.ip()) else {
        return "unknown".to_owned();
    };
    if !trusted.contains(&socket) {
        return socket.to_string();
    }
    let forwarded: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect();
    for hop in forwarded.iter().rev() {
        match hop.parse::<std::net::IpAddr>() {
            Ok(ip) if trusted.contains(&ip) => continue,
            Ok(ip) => return ip.to_string(),
            // A hop a proxy did not write: the client's own claim, not an address.
            Err(_) => break,
        }
    }
    socket.to_string()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn xff(v: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for x in v {
            h.append("x-forwarded-for", x.parse().unwrap());
        }
        h
    }

    #[test]
    fn a_client_cannot_choose_its_address_for_the_login_limits() {
        let proxy: std::net::IpAddr = "10.0.0.5".parse().unwrap();
        let from = |ip: &str| ConnectInfo(SocketAddr::new(ip.parse().unwrap(), 4000));
        // No trusted proxy: the header is the client's word, ignored.
        let c = from("198.51.100.9");
        assert_eq!(peer(Some(&c), &xff(&["203.0.113.1"]), &[]), "198.51.100.9");
        // From a peer that is not a trusted proxy: ignored too.
        assert_eq!(
            peer(Some(&c), &xff(&["203.0.113.1"]), &[proxy]),
            "198.51.100.9"
        );
        // Through the trusted proxy: the address it appended, not what the client prepended.
        let p = from("10.0.0.5");
        assert_eq!(
            peer(Some(&p), &xff(&["1.2.3.4, 203.0.113.7"]), &[proxy]),
            "203.0.113.7"
        );
        assert_eq!(
            peer(
                Some(&p),
                &xff(&["1.2.3.4", "203.0.113.7, 10.0.0.5"]),
                &[proxy]
            ),
            "203.0.113.7"
        );
        // A proxy that sent no header: the proxy itself.
        assert_eq!(peer(Some(&p), &HeaderMap::new(), &[proxy]), "10.0.0.5");
    }
}
