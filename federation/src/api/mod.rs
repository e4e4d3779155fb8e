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
    /// Login attempts per minute per (address, username).
    pub logins_per_minute: f64,
    /// Longest `wait` a result poll may ask for.
    pub max_wait: Duration,
    /// A static bearer token `/metrics` also accepts (for Prometheus), if set.
    pub metrics_token: Option<zeroize::Zeroizing<String>>,
    /// Mark the dashboard's session cookies `Secure` (sent over HTTPS only; browsers also send
    /// them to `http://localhost`). Turn off only for plain-HTTP development on other hosts.
    pub cookie_secure: bool,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            token_ttl: Duration::from_secs(15 * 60),
            max_upload_bytes: 512 << 20,
            max_body_bytes: 1 << 20,
            rate_per_second: 20.0,
            rate_burst: 60.0,
            logins_per_minute: 10.0,
            max_wait: Duration::from_secs(60),
            metrics_token: None,
            cookie_secure: true,
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
    started: Instant,
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
            config,
            metrics: metrics::Metrics::default(),
            limiter: RateLimiter::default(),
            started: Instant::now(),
        }
    }

    /// Authenticates the request's bearer token, requires one of `roles`, and charges the
    /// user's rate limit.
    pub(crate) fn user(
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
        let claims = auth::verify_token(&self.node, token, self.config.token_ttl)
            .map_err(|e| ApiError::new(StatusCode::UNAUTHORIZED, "invalid_token", e.to_string()))?;
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
}

impl ApiError {
    /// An error with a status, a stable machine-readable code and a message for people.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            retry_after: None,
        }
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

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut r = (
            self.status,
            Json(json!({ "error": { "code": self.code, "message": self.message } })),
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

/// Counts and logs every request (method, route, status, time; never headers or bodies).
async fn observe(State(api): State<Arc<ApiState>>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or("(unmatched)", |m| m.as_str())
        .to_owned();
    let method = req.method().clone();
    let t0 = Instant::now();
    let resp = next.run(req).await;
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

/// The client address of a request (for login rate limits).
pub(crate) fn peer(ci: Option<&ConnectInfo<SocketAddr>>) -> String {
    ci.map_or_else(|| "unknown".to_owned(), |c| c.0.ip().to_string())
}
