//! The endpoints. Each handler authenticates, checks its input, and then either proposes
//! ledger entries, reads the applied ledger or this member's query index, or touches this
//! hospital's device store. The OpenAPI document ([`super::openapi`]) lists them all.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{ConnectInfo, Path, RawQuery, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, patch, post, put};
use axum::{Json, Router};
use medtech_ledger::entry::{AuthorId, Kind, ParsedEntry};
use medtech_noise::accounting::Subject;
use medtech_noise::Micros;
use medtech_protos::ledger::v1 as pb;
use rand_core::{OsRng, RngCore};
use serde::Deserialize;
use serde_json::{json, Value};

use super::accounts::{self, Account, AccountError};
use super::auth::{self, Role};
use super::{parse_json, read_body, ApiError, ApiState};
use crate::data::ingest::{self, Format};
use crate::node::QueryInfo;
use crate::protocol::{budget_entry, keyed_submit_entry, Outcome, DATASET};

type S = State<Arc<ApiState>>;
type ApiResult = Result<Response, ApiError>;

const READERS: &[Role] = &[Role::Admin, Role::Auditor];
const STAFF: &[Role] = &[Role::Admin, Role::Operator, Role::Auditor];
const ANYONE: &[Role] = &[Role::Admin, Role::Researcher, Role::Operator, Role::Auditor];

/// Every route.
pub(super) fn routes() -> Router<Arc<ApiState>> {
    Router::new()
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics))
        .route("/api/v1/openapi.json", get(openapi))
        .route("/api/v1/login", post(login))
        .route("/api/v1/password", post(change_password))
        .route("/api/v1/me", get(me))
        .route("/api/v1/interface", get(interface))
        .route("/api/v1/queries", post(submit).get(list_queries))
        .route("/api/v1/queries/export", get(export_queries))
        .route("/api/v1/queries/preview", post(preview))
        .route("/api/v1/queries/{id}", get(get_query))
        .route("/api/v1/budget", get(own_budget))
        .route("/api/v1/researchers", post(register).get(list_researchers))
        .route("/api/v1/researchers/{id}", patch(update_researcher))
        .route("/api/v1/accounts", post(create_account).get(list_accounts))
        .route("/api/v1/budgets/{subject}", put(set_budget))
        .route("/api/v1/committee", get(committee))
        .route("/api/v1/committee/config", get(committee_config))
        .route("/api/v1/committee/changes", post(committee_change))
        .route("/api/v1/changes/pending", get(pending_changes))
        .route("/api/v1/changes/{id}/approve", post(approve_change))
        .route("/api/v1/devices", post(upload_devices))
        .route("/api/v1/devices/stats", get(device_stats))
        .route("/api/v1/ledger/head", get(ledger_head))
        .route("/api/v1/ledger/entries", get(ledger_entries))
        .route("/api/v1/ledger/entries/{seq}/proof", get(inclusion_proof))
        .route("/api/v1/ledger/consistency", get(consistency_proof))
        .route("/api/v1/ledger/checkpoint", get(checkpoint))
        .route("/api/v1/ledger/export", get(ledger_export))
        .route("/api/v1/ledger/verify", post(ledger_verify))
}

fn ok(v: Value) -> ApiResult {
    Ok(Json(v).into_response())
}

pub(crate) fn rfc3339_ms(ms: u64) -> String {
    humantime::format_rfc3339_millis(std::time::UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}

/// `a=1&b=x` into a map (percent-decoded; `+` is a space).
pub(crate) fn params(raw: Option<String>) -> Result<BTreeMap<String, String>, ApiError> {
    let mut out = BTreeMap::new();
    let Some(raw) = raw else { return Ok(out) };
    for pair in raw.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        out.insert(decode(k)?, decode(v)?);
    }
    Ok(out)
}

fn decode(s: &str) -> Result<String, ApiError> {
    let bad = || {
        ApiError::bad_request(
            "invalid_parameter",
            "bad percent-encoding in the query string",
        )
    };
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                let hex = s.get(i + 1..i + 3).ok_or_else(bad)?;
                out.push(u8::from_str_radix(hex, 16).map_err(|_| bad())?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).map_err(|_| bad())
}

pub(crate) fn num<T: std::str::FromStr>(
    p: &BTreeMap<String, String>,
    k: &str,
) -> Result<Option<T>, ApiError> {
    p.get(k)
        .map(|v| {
            v.parse().map_err(|_| {
                ApiError::bad_request(
                    "invalid_parameter",
                    format!("`{k}` must be a non-negative integer"),
                )
            })
        })
        .transpose()
}

// ---- health, readiness, metrics, documentation --------------------------------------------

async fn health() -> Response {
    Json(json!({ "status": "ok" })).into_response()
}

async fn ready(State(api): S) -> Response {
    let leader = api.node.leader();
    let head = api.node.head().ok();
    let body = json!({
        "ready": leader.is_some() && head.is_some(),
        "member": api.node.name(),
        "leader": leader,
        "ledger_size": head.map(|h| h.0),
    });
    let status = if leader.is_some() && head.is_some() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body)).into_response()
}

async fn metrics(State(api): S, headers: HeaderMap) -> ApiResult {
    let static_ok = match (&api.config.metrics_token, super::bearer(&headers)) {
        (Some(expected), Some(given)) => {
            use subtle::ConstantTimeEq;
            bool::from(expected.as_bytes().ct_eq(given.as_bytes()))
        }
        _ => false,
    };
    if !static_ok {
        api.user(&headers, &[Role::Admin, Role::Operator])?;
    }
    let (size, _) = api.node.head()?;
    let devices = api.store.read().map(|s| s.len()).unwrap_or(0);
    let (pending, released, failed) = {
        let idx = api
            .index
            .read()
            .map_err(|_| ApiError::internal("query index poisoned"))?;
        idx.values()
            .fold((0, 0, 0), |(p, r, f), q| match &q.outcome {
                None => (p + 1, r, f),
                Some(Outcome::Released(_)) => (p, r + 1, f),
                Some(Outcome::Failed(_)) => (p, r, f + 1),
            })
    };
    let text = api.metrics.render(&[
        (
            "medtech_ledger_entries",
            "Entries in the applied ledger.",
            size as f64,
        ),
        (
            "medtech_ledger_has_leader",
            "1 if this member knows a Raft leader.",
            f64::from(u8::from(api.node.leader().is_some())),
        ),
        (
            "medtech_devices",
            "Devices in this hospital's store.",
            devices as f64,
        ),
        (
            "medtech_release_checks",
            "Releases this member's state machine checked (recombined from t partials).",
            crate::rules::RELEASE_CHECKS.load(std::sync::atomic::Ordering::Relaxed) as f64,
        ),
        (
            "medtech_release_check_seconds",
            "Seconds this member's state machine spent checking releases.",
            crate::rules::RELEASE_CHECK_NANOS.load(std::sync::atomic::Ordering::Relaxed) as f64
                / 1e9,
        ),
        (
            "medtech_queries_pending",
            "Queries seen on the ledger and not ended.",
            f64::from(pending),
        ),
        (
            "medtech_queries_released",
            "Queries released.",
            f64::from(released),
        ),
        (
            "medtech_queries_failed",
            "Queries failed.",
            f64::from(failed),
        ),
        (
            "medtech_password_hashes_peak",
            "The most password hashes (logins, password changes) run at once.",
            api.hashes_peak() as f64,
        ),
        (
            "medtech_uptime_seconds",
            "Seconds since the API started.",
            api.started.elapsed().as_secs_f64(),
        ),
    ]);
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response())
}

async fn openapi() -> Response {
    Json(super::openapi::document()).into_response()
}

// ---- sessions -------------------------------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Login {
    username: String,
    password: zeroize::Zeroizing<String>,
}

/// Checks a login (rate-limited per client address and username, per client address and for
/// everyone; the password hash waits for one of a few hashing slots) and issues a token.
pub(crate) async fn login_core(
    api: &Arc<ApiState>,
    peer: &str,
    username: &str,
    password: zeroize::Zeroizing<String>,
) -> Result<(String, auth::Claims, bool), ApiError> {
    api.charge_login(peer, username)?;
    let accounts = Arc::clone(api);
    let user = username.to_owned();
    // Argon2 takes tens of milliseconds and 19 MiB: off the reactor, a few at a time.
    let r = api
        .hashing(move || accounts.accounts.login(&user, &password))
        .await?;
    let a = match r {
        Ok(a) => a,
        Err(e @ (AccountError::BadCredentials | AccountError::Disabled)) => {
            api.metrics.login_failures.fetch_add(1, Ordering::Relaxed);
            tracing::info!(target: "medtech::api", user = %username, "login refused: {e}");
            return Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "bad_credentials",
                e.to_string(),
            ));
        }
        Err(e) => return Err(ApiError::internal(e)),
    };
    let (token, claims) = issue_for(api, &a);
    Ok((token, claims, a.must_change_password))
}

/// A token for local account `a`, as it is now.
fn issue_for(api: &ApiState, a: &Account) -> (String, auth::Claims) {
    auth::issue_token(
        &api.node,
        &a.username,
        a.role,
        api.config.token_ttl,
        auth::AccountState {
            must_change_password: a.must_change_password,
            password_generation: a.password_generation,
        },
    )
}

async fn login(State(api): S, req: Request) -> ApiResult {
    let peer = super::peer(
        req.extensions().get::<ConnectInfo<std::net::SocketAddr>>(),
        req.headers(),
        &api.config.trusted_proxies,
    );
    let body = read_body(req.into_body(), api.config.max_body_bytes).await?;
    let l: Login = parse_json(&body)?;
    let (token, claims, must_change) = login_core(&api, &peer, &l.username, l.password).await?;
    ok(json!({
        "token": token,
        "token_type": "Bearer",
        "username": claims.sub,
        "role": claims.role,
        "expires_at": claims.exp,
        "must_change_password": must_change,
    }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ChangePassword {
    old_password: zeroize::Zeroizing<String>,
    new_password: zeroize::Zeroizing<String>,
}

/// Changes the signed-in user's password on this member. Every token issued before is refused
/// here from now on; returns a fresh token for the account.
pub(crate) async fn change_password_core(
    api: &Arc<ApiState>,
    user: &auth::Claims,
    old: zeroize::Zeroizing<String>,
    new: zeroize::Zeroizing<String>,
) -> Result<(String, auth::Claims), ApiError> {
    let a = Arc::clone(api);
    let sub = user.sub.clone();
    let r = api
        .hashing(move || a.accounts.change_password(&sub, &old, &new))
        .await?;
    match r {
        Ok(account) => Ok(issue_for(api, &account)),
        Err(AccountError::BadCredentials) => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "bad_credentials",
            "the old password is wrong",
        )),
        Err(AccountError::Unknown(_)) => Err(ApiError::new(
            StatusCode::CONFLICT,
            "not_local",
            format!(
                "the account lives on another member (token issued by {}); change it there",
                user.iss
            ),
        )),
        Err(e @ AccountError::Invalid(_)) => {
            Err(ApiError::bad_request("invalid_password", e.to_string()))
        }
        Err(e) => Err(ApiError::internal(e)),
    }
}

async fn change_password(State(api): S, headers: HeaderMap, body: Body) -> ApiResult {
    let user = api.user_changing_password(&headers, ANYONE)?;
    let c: ChangePassword = parse_json(&read_body(body, api.config.max_body_bytes).await?)?;
    let (token, claims) = change_password_core(&api, &user, c.old_password, c.new_password).await?;
    ok(json!({
        "changed": true,
        "token": token,
        "token_type": "Bearer",
        "expires_at": claims.exp,
    }))
}

async fn me(State(api): S, headers: HeaderMap) -> ApiResult {
    let user = api.user_changing_password(&headers, ANYONE)?;
    let local = api.accounts.get(&user.sub);
    ok(json!({
        "username": user.sub,
        "role": user.role,
        "issued_by": user.iss,
        "expires_at": user.exp,
        "display_name": local.as_ref().map(|a| a.display_name.clone()),
        "must_change_password": user.mcp || local.as_ref().is_some_and(|a| a.must_change_password),
        "member": api.node.name(),
    }))
}

// ---- researchers: the interface, queries and budget ---------------------------------------

async fn interface(State(api): S, headers: HeaderMap) -> ApiResult {
    api.user(&headers, ANYONE)?;
    ok(interface_json(&api))
}

/// The query interface as the API reports it.
pub(crate) fn interface_json(api: &ApiState) -> Value {
    let p = &api.view.platform;
    let bins: BTreeMap<String, Vec<String>> = p
        .grouped_targets
        .iter()
        .filter_map(|t| p.bins(t).map(|b| (t.clone(), b)))
        .collect();
    json!({
        "query_kinds": ["count", "grouped_count", "average"],
        "count_targets": p.count_targets,
        "grouped_targets": p.grouped_targets,
        "average_targets": p.average_targets,
        "bins": bins,
        "fields": crate::query::field_types(),
        "operators": {
            "string": ["equals", "contains", "starts_with", "ends_with"],
            "integer": ["equals", "greater_than", "less_than", "greater_than_or_equal", "less_than_or_equal"],
            "timestamp": ["equals", "before", "after"],
            "bool": ["equals"],
            "enum": ["equals"],
        },
        "time_range_field": "last_sync_time",
        "max_epsilon": p.max_epsilon_micros as f64 / 1e6,
        "committee": { "members": api.view.members, "threshold": api.view.threshold },
        "confidence": 1.0 - crate::protocol::ALPHA,
    })
}

/// The request header naming a submission's idempotency key.
pub(crate) const IDEMPOTENCY_KEY: &str = "idempotency-key";

/// The response header set when a submission is answered with an earlier one's 202.
pub(crate) const IDEMPOTENT_REPLAYED: &str = "idempotent-replayed";

/// The `Idempotency-Key` of a request, if it gives one: printable ASCII, 1 to 255 bytes
/// (`medtech_ledger::state::check_idempotency_key`, the rule every member's ledger applies),
/// given once; 400 `invalid_idempotency_key` otherwise.
pub(crate) fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let bad = |why: String| ApiError::bad_request("invalid_idempotency_key", why);
    let mut values = headers.get_all(IDEMPOTENCY_KEY).iter();
    let Some(v) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(bad("give at most one Idempotency-Key header".into()));
    }
    let key = std::str::from_utf8(v.as_bytes())
        .map_err(|_| bad("an idempotency key is printable ASCII".into()))?;
    medtech_ledger::state::check_idempotency_key(key).map_err(bad)?;
    Ok(Some(key.to_owned()))
}

/// Submits `spec` for `user` through this member's ledger node: returns the query id, its
/// sequence number and ε.
pub(crate) async fn submit_core(
    api: &ApiState,
    user: &auth::Claims,
    spec: crate::query::QuerySpec,
) -> Result<Value, ApiError> {
    submit_keyed(api, user, spec, None).await.map(|(v, _)| v)
}

/// Compiles `spec` for the current committee as a submission does, with the API's refusals:
/// 422 `epsilon_below_floor` (naming the floor) or 422 `invalid_query`.
pub(crate) fn compile_for_api(
    api: &ApiState,
    spec: crate::query::QuerySpec,
) -> Result<crate::query::Compiled, ApiError> {
    api.view
        .compile_query(spec)
        .map_err(|e| match e.min_epsilon() {
            // Issue 24 §4: below the ε floor no proof bound holds the noise; name the floor.
            Some(floor) => {
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "epsilon_below_floor", e.0)
                    .with_detail("min_epsilon", json!(floor))
            }
            None => ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_query", e.0),
        })
}

/// What a compiled query would cost and how precise its released values would be, from public
/// parameters alone (issue 28 §2): the ε charged, the smallest ε accepted for its kind and
/// target, and for each noised output the 95 % half-width and the noise's standard deviation,
/// for the fewest noise shares a close may list (`n − f`) and for all `n`. An Average's two
/// outputs (sum and count) are given at 97.5 % each, as its release computes them (joint
/// coverage ≥ 95 %).
pub(crate) fn preview_json(
    compiled: &crate::query::Compiled,
    view: &crate::protocol::CommitteeView,
) -> Result<Value, ApiError> {
    let plan = &compiled.plan;
    let internal = |e: medtech_noise::Error| {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_query",
            format!("the noise of this query has no interval: {e}"),
        )
    };
    let (fewest, all) = (view.noise_needed() as u32, u32::from(view.n()));
    let alpha = match plan.shape {
        medtech_noise::QueryShape::Average { .. } => crate::protocol::ALPHA / 2.0,
        _ => crate::protocol::ALPHA,
    };
    let outputs = plan
        .outputs
        .iter()
        .map(|o| {
            Ok(json!({
                "name": o.name,
                "coordinates": o.coordinates,
                "sensitivity": o.sensitivity,
                "confidence": 1.0 - alpha,
                "half_width": {
                    "fewest_shares": o.share.confidence_half_width(fewest, alpha).map_err(internal)?,
                    "all_shares": o.share.confidence_half_width(all, alpha).map_err(internal)?,
                },
                "std_dev": {
                    "fewest_shares": o.share.variance(fewest).sqrt(),
                    "all_shares": o.share.variance(all).sqrt(),
                },
            }))
        })
        .collect::<Result<Vec<Value>, ApiError>>()?;
    let floor = medtech_noise::QueryPlan::min_epsilon(plan.shape, 1).map_err(internal)?;
    Ok(json!({
        "epsilon": plan.cost.epsilon.0 as f64 / 1e6,
        "min_epsilon": floor.as_f64(),
        "labels": compiled.labels,
        "noise_shares": { "fewest": fewest, "all": all },
        "outputs": outputs,
    }))
}

/// `POST /api/v1/queries/preview`: the query as `POST /api/v1/queries` would compile it, with
/// its cost and expected precision, and the caller's remaining budget — nothing is proposed,
/// charged or recorded.
async fn preview(State(api): S, headers: HeaderMap, body: Body) -> ApiResult {
    let user = api.user(&headers, &[Role::Researcher])?;
    let spec = parse_json(&read_body(body, api.config.max_body_bytes).await?)?;
    let compiled = compile_for_api(&api, spec)?;
    let mut v = preview_json(&compiled, &api.view)?;
    let (mine, dataset) = budgets_of(&api, &user.sub)?;
    // A subject without a limit can be charged nothing (`medtech_noise::Accountant`).
    let eps = v["epsilon"].as_f64().unwrap_or(f64::INFINITY);
    let covers = |b: &Value| b["epsilon_remaining"].as_f64().is_some_and(|r| r >= eps);
    v["affordable"] = json!(covers(&mine) && covers(&dataset));
    v["budget"] = json!({ "researcher": mine, "dataset": dataset });
    ok(v)
}

/// [`submit_core`] under an idempotency key: the ledger admits one query per (researcher, key)
/// (`medtech_ledger::state`, rule 5), so a repeat of an admitted request is answered with the
/// first one's body (and `true`: a replay) without proposing or charging anything, and a
/// different request under a used key is refused (422 `idempotency_key_reused`). What is
/// compared is the ledger's digest of the query as the entry would carry it (the canonical
/// query spec), looked up in this member's replicated ledger state.
pub(crate) async fn submit_keyed(
    api: &ApiState,
    user: &auth::Claims,
    spec: crate::query::QuerySpec,
    key: Option<&str>,
) -> Result<(Value, bool), ApiError> {
    let compiled = compile_for_api(api, spec)?;
    let mut id = [0u8; 8];
    OsRng.fill_bytes(&mut id);
    let id = format!("q-{}", hex::encode(id));
    let entry = keyed_submit_entry(&id, &compiled, &user.sub, key);
    let epsilon = compiled.plan.cost.epsilon.0 as f64 / 1e6;
    let keyed = match (key, &entry) {
        (Some(k), Kind::SubmitQuery(q)) => {
            Some((k, medtech_ledger::state::request_digest(&q.query)))
        }
        _ => None,
    };
    let first = |api: &ApiState| -> Result<Option<Value>, ApiError> {
        match &keyed {
            Some((k, digest)) => first_submission(api, &user.sub, k, digest, epsilon),
            None => Ok(None),
        }
    };
    let seen = |s: &medtech_ledger::state::LedgerState| {
        keyed
            .as_ref()
            .is_some_and(|(k, _)| s.idempotent_submission(&user.sub, k).is_some())
    };
    // A repeat of a request this member has applied: the first answer, nothing proposed.
    if let Some(v) = first(api)? {
        return Ok((v, true));
    }
    // At most `max_queries_in_flight` open queries per researcher (issue 24 §4).
    let reservation = match api.reserve_query(&user.sub, &id) {
        Ok(r) => r,
        // A repeat admitted through another member, not applied here yet, is not a new query
        // in flight: answer it rather than 429.
        Err(e) if keyed.is_some() => {
            if api.caught_up(seen).await? {
                if let Some(v) = first(api)? {
                    return Ok((v, true));
                }
            }
            return Err(e);
        }
        Err(e) => return Err(e),
    };
    let receipt = api.node.propose_own(entry).await?;
    if receipt.rejection.is_none() {
        reservation.admitted();
    } else {
        drop(reservation);
    }
    if let Some(why) = receipt.rejection {
        if keyed.is_some() && why.contains(medtech_ledger::state::DUPLICATE_IDEMPOTENCY_KEY) {
            // A submission under the same key was admitted first (a concurrent repeat): the
            // ledger refused this one, nothing was charged; answer with the first, which the
            // ledger has committed and this member applies in a moment.
            if applied(api, seen).await? {
                if let Some(v) = first(api)? {
                    return Ok((v, true));
                }
            }
            return Err(ApiError::unavailable(
                "a submission under this idempotency key was admitted but this member has not \
                 applied it yet: retry with the same key",
            ));
        }
        api.metrics.queries_refused.fetch_add(1, Ordering::Relaxed);
        let (status, code) = if why.contains("budget") {
            (StatusCode::FORBIDDEN, "budget_exceeded")
        } else {
            (StatusCode::CONFLICT, "refused_by_ledger")
        };
        return Err(ApiError::new(status, code, why));
    }
    api.metrics
        .queries_submitted
        .fetch_add(1, Ordering::Relaxed);
    tracing::info!(target: "medtech::api", query = %id, researcher = %user.sub, "query admitted");
    Ok((submitted_json(&id, receipt.sequence, epsilon), false))
}

/// Waits until this member's applied state shows `seen`, for at most
/// [`COMMITTED_APPLY_WAIT`]: for what the ledger has already committed (a rejection named it),
/// which a follower applies a moment after the leader. Woken by each applied entry.
async fn applied(
    api: &ApiState,
    seen: impl Fn(&medtech_ledger::state::LedgerState) -> bool,
) -> Result<bool, ApiError> {
    let now = |api: &ApiState| -> Result<bool, ApiError> { Ok(seen(api.node.read()?.state())) };
    let mut size = api.node.applied_size();
    let deadline = tokio::time::Instant::now() + COMMITTED_APPLY_WAIT;
    loop {
        if now(api)? {
            return Ok(true);
        }
        match tokio::time::timeout_at(deadline, size.changed()).await {
            Ok(Ok(())) => {}
            // The deadline passed, or the node stopped.
            _ => return now(api),
        }
    }
}

/// How long [`applied`] waits for this member to apply what the ledger committed.
const COMMITTED_APPLY_WAIT: Duration = Duration::from_secs(10);

/// The 202 body of an admitted submission.
fn submitted_json(id: &str, sequence: Option<u64>, epsilon: f64) -> Value {
    json!({
        "id": id,
        "status": "pending",
        "sequence": sequence,
        "epsilon": epsilon,
    })
}

/// The answer to a submission under `key` that `researcher` already made, from this member's
/// ledger state: `None` if there is none; the first submission's 202 body if the request is
/// the same (`digest`); 422 `idempotency_key_reused` if it is not.
fn first_submission(
    api: &ApiState,
    researcher: &str,
    key: &str,
    digest: &medtech_ledger::merkle::Hash,
    epsilon: f64,
) -> Result<Option<Value>, ApiError> {
    let l = api.node.read()?;
    let Some(first) = l.state().idempotent_submission(researcher, key) else {
        return Ok(None);
    };
    if first.digest != *digest {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "idempotency_key_reused",
            format!(
                "this Idempotency-Key was used for another query ({}): use a new key for a new \
                 query; nothing was charged",
                first.query_id
            ),
        )
        .with_detail("query_id", json!(first.query_id)));
    }
    let sequence = l.state().query(&first.query_id).map(|q| q.submitted_at);
    Ok(Some(submitted_json(&first.query_id, sequence, epsilon)))
}

async fn submit(State(api): S, headers: HeaderMap, body: Body) -> ApiResult {
    let user = api.user(&headers, &[Role::Researcher])?;
    let key = idempotency_key(&headers)?;
    let spec = parse_json(&read_body(body, api.config.max_body_bytes).await?)?;
    let (v, replayed) = submit_keyed(&api, &user, spec, key.as_deref()).await?;
    if replayed {
        api.metrics.queries_replayed.fetch_add(1, Ordering::Relaxed);
    }
    let location = format!("/api/v1/queries/{}", v["id"].as_str().unwrap_or_default());
    let mut r = (
        StatusCode::ACCEPTED,
        [(header::LOCATION, location)],
        Json(v),
    )
        .into_response();
    if replayed {
        r.headers_mut().insert(
            IDEMPOTENT_REPLAYED,
            axum::http::HeaderValue::from_static("true"),
        );
    }
    Ok(r)
}

/// A query as the API shows it to `user`.
pub(crate) fn query_json(q: &QueryInfo, api: &ApiState, user: &auth::Claims) -> Value {
    let (status, result, failure) = match &q.outcome {
        None => ("pending", Value::Null, Value::Null),
        Some(Outcome::Released(r)) => (
            "released",
            serde_json::to_value(own_bundle(r, api, user)).unwrap_or(Value::Null),
            Value::Null,
        ),
        Some(Outcome::Failed(why)) => ("failed", Value::Null, Value::String(why.clone())),
    };
    let unit = q
        .spec
        .as_ref()
        .and_then(|s| s.target.as_ref())
        .and_then(|t| api.view.platform.average_targets.get(t))
        .map(|r| r.unit.clone());
    let interval = match &q.outcome {
        Some(Outcome::Released(r)) => r.result.average_interval().map(|(lo, hi)| json!([lo, hi])),
        _ => None,
    };
    let table = match &q.outcome {
        Some(Outcome::Released(r)) => result_table(r),
        _ => Value::Null,
    };
    json!({
        "id": q.id,
        "researcher": q.researcher,
        "status": status,
        "query": q.spec,
        "epsilon": q.spec.as_ref().map(|s| s.epsilon),
        "submitted_at": rfc3339_ms(q.submitted_ms),
        "ended_at": q.ended_ms.map(rfc3339_ms),
        "sequence": q.sequence,
        "contributions": q.contributions,
        "partial_decryptions": q.partials,
        "result": result,
        "average_interval": interval,
        "table": table,
        "unit": unit,
        "failure": failure,
    })
}

/// A release flattened for tools (issue 28 §3): one row per released value — the count, each
/// bin of a grouped count, or the average — with `labels`, `values` (raw noisy integers; an
/// average as a number) and `intervals` (`[low, high]` at `confidence`; `null` for an average
/// whose count interval reaches 0).
pub(crate) fn result_table(r: &crate::protocol::Release) -> Value {
    use medtech_noise::QueryResult;
    let row = |v: &medtech_noise::NoisyValue| {
        let (value, h) = (v.value, i128::from(v.half_width));
        let int =
            |x: i128| json!(i64::try_from(x).unwrap_or(if x < 0 { i64::MIN } else { i64::MAX }));
        (int(value), json!([int(value - h), int(value + h)]))
    };
    let (labels, values, intervals): (Vec<Value>, Vec<Value>, Vec<Value>) = match &r.result {
        QueryResult::Count(v) => {
            let (value, interval) = row(v);
            (vec![json!("count")], vec![value], vec![interval])
        }
        QueryResult::GroupedCount(bins) => {
            let mut out = (Vec::new(), Vec::new(), Vec::new());
            for (i, v) in bins.iter().enumerate() {
                let (value, interval) = row(v);
                out.0.push(json!(r
                    .labels
                    .get(i)
                    .cloned()
                    .unwrap_or_else(|| i.to_string())));
                out.1.push(value);
                out.2.push(interval);
            }
            out
        }
        QueryResult::Average { .. } => (
            vec![json!("average")],
            vec![json!(r.average)],
            vec![r
                .result
                .average_interval()
                .map_or(Value::Null, |(lo, hi)| json!([lo, hi]))],
        ),
    };
    json!({ "labels": labels, "values": values, "intervals": intervals, "confidence": r.confidence })
}

/// `r` as `user` may see it: a researcher sees, of the queries decrypted in the same bundle,
/// only their own (the others' ids would tell them who else queries, and when); admins and
/// auditors, who read the ledger anyway, see the whole bundle.
fn own_bundle<'a>(
    r: &'a crate::protocol::Release,
    api: &ApiState,
    user: &auth::Claims,
) -> std::borrow::Cow<'a, crate::protocol::Release> {
    if user.role != Role::Researcher || r.bundle.is_empty() {
        return std::borrow::Cow::Borrowed(r);
    }
    let mine: Vec<String> = match api.node.read() {
        Ok(l) => r
            .bundle
            .iter()
            .filter(|id| {
                l.state()
                    .query(id)
                    .is_some_and(|q| q.researcher == user.sub)
            })
            .cloned()
            .collect(),
        // Fail closed: no other query's id.
        Err(_) => Vec::new(),
    };
    let mut own = r.clone();
    own.bundle = mine;
    std::borrow::Cow::Owned(own)
}

pub(crate) fn visible(user: &auth::Claims, q: &QueryInfo) -> bool {
    user.role != Role::Researcher || q.researcher == user.sub
}

async fn get_query(
    State(api): S,
    headers: HeaderMap,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
) -> ApiResult {
    let user = api.user(&headers, &[Role::Researcher, Role::Admin, Role::Auditor])?;
    let p = params(raw)?;
    let wait = Duration::from_secs(num::<u64>(&p, "wait")?.unwrap_or(0)).min(api.config.max_wait);
    let deadline = Instant::now() + wait;
    let not_found = || ApiError::not_found(format!("no query {id:?} of yours on the ledger"));
    let in_index = api
        .index
        .read()
        .map_err(|_| ApiError::internal("query index poisoned"))?
        .contains_key(&id);
    if !in_index && !wait.is_zero() {
        // Waiting is for a query on the ledger to end, not for an id that is not there (which
        // would hold the connection for nothing): once this member has applied everything
        // committed when the request came, an id not on its ledger, or not the researcher's,
        // is not found now.
        let on_ledger = |api: &ApiState| -> Result<bool, ApiError> {
            Ok(api
                .node
                .read()?
                .state()
                .query(&id)
                .is_some_and(|q| user.role != Role::Researcher || q.researcher == user.sub))
        };
        if !on_ledger(&api)? {
            if api.node.linearizable().await.is_err() {
                // A follower cannot confirm with the leader here: give replication a moment
                // (a query admitted at another member reaches this one within it), not `wait`.
                let grace = Instant::now() + Duration::from_secs(1).min(wait);
                while !on_ledger(&api)? && Instant::now() < grace {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
            if !on_ledger(&api)? {
                return Err(not_found());
            }
        }
    }
    loop {
        let found = api
            .index
            .read()
            .map_err(|_| ApiError::internal("query index poisoned"))?
            .get(&id)
            .filter(|q| visible(&user, q))
            .cloned();
        match found {
            Some(q) if q.outcome.is_some() || Instant::now() >= deadline => {
                return ok(query_json(&q, &api, &user))
            }
            None if Instant::now() >= deadline => return Err(not_found()),
            // A map lookup under a read lock: cheap enough to look often.
            _ => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
}

/// The queries `user` may see, filtered by `status` and `researcher` in `p`, newest first.
pub(crate) fn selected(
    api: &ApiState,
    user: &auth::Claims,
    p: &BTreeMap<String, String>,
) -> Result<Vec<Value>, ApiError> {
    let who = p.get("researcher");
    let status = p.get("status").map(String::as_str);
    if let Some(s) = status {
        if !matches!(s, "pending" | "released" | "failed") {
            return Err(ApiError::bad_request(
                "invalid_parameter",
                "`status` is pending, released or failed",
            ));
        }
    }
    let idx = api
        .index
        .read()
        .map_err(|_| ApiError::internal("query index poisoned"))?;
    let mut v: Vec<QueryInfo> = idx
        .values()
        .filter(|q| visible(user, q))
        .filter(|q| who.is_none_or(|w| &q.researcher == w))
        .cloned()
        .collect();
    // query_json reads the ledger: not under the index's lock.
    drop(idx);
    v.sort_by_key(|q| std::cmp::Reverse(q.sequence));
    Ok(v.iter()
        .map(|q| query_json(q, api, user))
        .filter(|j| status.is_none_or(|s| j["status"] == s))
        .collect())
}

async fn list_queries(State(api): S, headers: HeaderMap, RawQuery(raw): RawQuery) -> ApiResult {
    let user = api.user(&headers, &[Role::Researcher, Role::Admin, Role::Auditor])?;
    let p = params(raw)?;
    let limit = num::<usize>(&p, "limit")?.unwrap_or(100).min(1000);
    // Cursor: the `next` of the previous page, the ledger sequence of its last query (queries
    // are newest first, so the page goes on with the older ones).
    let before = num::<u64>(&p, "before")?;
    let all = selected(&api, &user, &p)?;
    let total = all.len();
    let seq = |q: &Value| q["sequence"].as_u64().unwrap_or(0);
    let mut rest = all
        .into_iter()
        .filter(|q| before.is_none_or(|b| seq(q) < b))
        .peekable();
    let page: Vec<Value> = rest.by_ref().take(limit).collect();
    let next = match (rest.peek(), page.last()) {
        (Some(_), Some(last)) => json!(seq(last)),
        _ => Value::Null,
    };
    ok(json!({ "total": total, "queries": page, "next": next }))
}

async fn export_queries(State(api): S, headers: HeaderMap, RawQuery(raw): RawQuery) -> ApiResult {
    let user = api.user(&headers, READERS)?;
    let p = params(raw)?;
    let all = selected(&api, &user, &p)?;
    match p.get("format").map_or("json", String::as_str) {
        "json" => Ok((
            [(
                header::CONTENT_DISPOSITION,
                "attachment; filename=\"queries.json\"",
            )],
            Json(Value::Array(all)),
        )
            .into_response()),
        "csv" => {
            let bytes = history_csv(&all)?;
            Ok((
                [
                    (header::CONTENT_TYPE, "text/csv; charset=utf-8"),
                    (
                        header::CONTENT_DISPOSITION,
                        "attachment; filename=\"queries.csv\"",
                    ),
                ],
                bytes,
            )
                .into_response())
        }
        _ => Err(ApiError::bad_request(
            "invalid_parameter",
            "`format` is json or csv",
        )),
    }
}

/// Query history rows as CSV.
pub(crate) fn history_csv(all: &[Value]) -> Result<Vec<u8>, ApiError> {
    let mut w = csv::Writer::from_writer(Vec::new());
    let cols = [
        "id",
        "researcher",
        "status",
        "submitted_at",
        "ended_at",
        "epsilon",
        "query",
        "result",
        "failure",
    ];
    let csv_err = |e: csv::Error| ApiError::internal(e);
    w.write_record(cols).map_err(csv_err)?;
    for q in all {
        let cell = |k: &str| match &q[k] {
            Value::Null => String::new(),
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        w.write_record(cols.iter().map(|c| cell(c)))
            .map_err(csv_err)?;
    }
    w.into_inner()
        .map_err(|e| ApiError::internal(e.to_string()))
}

pub(crate) fn budget_json(api: &ApiState, subject: &Subject) -> Result<Value, ApiError> {
    let l = api.node.read()?;
    let b = l.state().budgets();
    let eps = |c: Option<medtech_noise::Cost>| c.map(|c| c.epsilon.0 as f64 / 1e6);
    Ok(json!({
        "subject": subject.to_string(),
        "epsilon_limit": eps(b.limit(subject)),
        "epsilon_spent": b.spent(subject).epsilon.0 as f64 / 1e6,
        "epsilon_remaining": eps(b.remaining(subject)),
        "as_of_entry": l.log().tree().size(),
    }))
}

/// `researcher`'s budget and the dataset's: what every query of theirs is charged against.
fn budgets_of(api: &ApiState, researcher: &str) -> Result<(Value, Value), ApiError> {
    Ok((
        budget_json(api, &Subject::Researcher(researcher.to_owned()))?,
        budget_json(api, &Subject::Dataset(DATASET.into()))?,
    ))
}

async fn own_budget(State(api): S, headers: HeaderMap) -> ApiResult {
    let user = api.user(&headers, &[Role::Researcher])?;
    let (mine, dataset) = budgets_of(&api, &user.sub)?;
    ok(json!({ "researcher": mine, "dataset": dataset }))
}

// ---- admin: researchers, accounts, budgets, committee ---------------------------------------

/// A researcher to register.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct NewResearcher {
    pub(crate) username: String,
    #[serde(default)]
    pub(crate) display_name: String,
    #[serde(default)]
    pub(crate) email: String,
    #[serde(default)]
    pub(crate) affiliation: String,
    /// ε budget.
    pub(crate) epsilon_budget: f64,
    /// Their own Ed25519 public key (hex), if they will sign queries themselves.
    #[serde(default)]
    pub(crate) public_key: Option<String>,
}

fn micros(eps: f64, what: &str) -> Result<u64, ApiError> {
    if !(eps.is_finite() && (0.0..=1e6).contains(&eps)) {
        return Err(ApiError::bad_request(
            "invalid_budget",
            format!("{what} must be between 0 and 1000000"),
        ));
    }
    Micros::from_f64_floor(eps)
        .map(|m| m.0)
        .map_err(|e| ApiError::bad_request("invalid_budget", e.to_string()))
}

async fn propose(api: &ApiState, kind: Kind) -> Result<u64, ApiError> {
    let r = api.node.propose_own(kind).await?;
    match (r.rejection, r.sequence) {
        (Some(why), _) => Err(ApiError::new(
            StatusCode::CONFLICT,
            "refused_by_ledger",
            why,
        )),
        (None, Some(seq)) => Ok(seq),
        (None, None) => Err(ApiError::internal(
            "ledger accepted an entry without a sequence",
        )),
    }
}

async fn register(State(api): S, headers: HeaderMap, body: Body) -> ApiResult {
    let admin = api.user(&headers, &[Role::Admin])?;
    let r: NewResearcher = parse_json(&read_body(body, api.config.max_body_bytes).await?)?;
    let v = register_core(&api, &admin, r).await?;
    Ok((StatusCode::CREATED, Json(v)).into_response())
}

/// Registers a researcher: ledger identity and budget, and an account here with a generated
/// password (in the returned JSON, shown once).
pub(crate) async fn register_core(
    api: &Arc<ApiState>,
    admin: &auth::Claims,
    r: NewResearcher,
) -> Result<Value, ApiError> {
    local_admin(api, admin)?;
    accounts::check_username(&r.username)
        .map_err(|e| ApiError::bad_request("invalid_username", e.to_string()))?;
    if r.display_name.len() > 256 || r.email.len() > 256 || r.affiliation.len() > 256 {
        return Err(ApiError::bad_request(
            "invalid_field",
            "names, e-mail and affiliation are at most 256 bytes",
        ));
    }
    let budget = micros(r.epsilon_budget, "epsilon_budget")?;
    if api.accounts.get(&r.username).is_some() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "exists",
            format!("account {:?} exists already on this member", r.username),
        ));
    }
    let key: [u8; 32] = match &r.public_key {
        Some(h) => hex::decode(h)
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| {
                ApiError::bad_request(
                    "invalid_public_key",
                    "public_key is 64 hex digits (Ed25519)",
                )
            })?,
        // The node signs this researcher's queries on their behalf; the key only names them.
        None => medtech_ledger::entry::ResearcherKey::generate(&r.username, &mut OsRng)
            .public_key()
            .to_bytes(),
    };
    let on_ledger = api.node.read()?.state().researcher(&r.username).is_some();
    if !on_ledger {
        propose(
            api,
            Kind::RegisterResearcher(pb::RegisterResearcher {
                researcher_id: r.username.clone(),
                display_name: if r.display_name.is_empty() {
                    r.username.clone()
                } else {
                    r.display_name.clone()
                },
                public_key: key.to_vec(),
            }),
        )
        .await?;
    }
    propose(
        api,
        budget_entry(&format!("researcher:{}", r.username), budget),
    )
    .await?;
    let password = accounts::generate_password();
    let account = Account {
        display_name: r.display_name,
        email: r.email,
        affiliation: r.affiliation,
        ..Account::new(&r.username, Role::Researcher)
    };
    let a = Arc::clone(api);
    let pw = password.clone();
    api.hashing(move || a.accounts.create(account, &pw, true))
        .await?
        .map_err(ApiError::internal)?;
    tracing::info!(target: "medtech::api", admin = %admin.sub, researcher = %r.username, "researcher registered");
    Ok(json!({
        "username": r.username,
        "password": *password,
        "must_change_password": true,
        "already_on_ledger": on_ledger,
        "epsilon_budget": budget as f64 / 1e6,
    }))
}

async fn list_researchers(State(api): S, headers: HeaderMap) -> ApiResult {
    api.user(&headers, READERS)?;
    ok(researchers_json(&api)?)
}

/// Every researcher on the ledger with status, budget and what this member knows of them.
pub(crate) fn researchers_json(api: &ApiState) -> Result<Value, ApiError> {
    let ids: Vec<(String, String, bool)> = api
        .node
        .read()?
        .state()
        .researchers()
        .map(|r| (r.id.clone(), r.display_name.clone(), r.enabled))
        .collect();
    let mut out = Vec::new();
    for (id, name, enabled) in ids {
        let local = api.accounts.get(&id);
        out.push(json!({
            "username": id,
            "display_name": name,
            "enabled": enabled,
            "email": local.as_ref().map(|a| a.email.clone()),
            "affiliation": local.as_ref().map(|a| a.affiliation.clone()),
            "account_on_this_member": local.is_some(),
            "budget": budget_json(api, &Subject::Researcher(id.clone()))?,
        }));
    }
    Ok(json!({ "researchers": out }))
}

/// Changes to a researcher.
#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ResearcherUpdate {
    #[serde(default)]
    pub(crate) enabled: Option<bool>,
    #[serde(default)]
    pub(crate) epsilon_budget: Option<f64>,
    #[serde(default)]
    pub(crate) display_name: Option<String>,
    #[serde(default)]
    pub(crate) email: Option<String>,
    #[serde(default)]
    pub(crate) affiliation: Option<String>,
}

async fn update_researcher(
    State(api): S,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Body,
) -> ApiResult {
    let admin = api.user(&headers, &[Role::Admin])?;
    let u: ResearcherUpdate = parse_json(&read_body(body, api.config.max_body_bytes).await?)?;
    ok(update_researcher_core(&api, &admin, &id, u).await?)
}

/// Applies `u` to researcher `id`: status and budget as ledger entries, details locally.
pub(crate) async fn update_researcher_core(
    api: &ApiState,
    admin: &auth::Claims,
    id: &str,
    u: ResearcherUpdate,
) -> Result<Value, ApiError> {
    let id = id.to_owned();
    if !api.caught_up(|s| s.researcher(&id).is_some()).await? {
        return Err(ApiError::not_found(format!(
            "no researcher {id:?} on the ledger"
        )));
    }
    for s in [&u.display_name, &u.email, &u.affiliation]
        .into_iter()
        .flatten()
    {
        if s.len() > 256 {
            return Err(ApiError::bad_request(
                "invalid_field",
                "names, e-mail and affiliation are at most 256 bytes",
            ));
        }
    }
    let details = u.display_name.is_some() || u.email.is_some() || u.affiliation.is_some();
    if u.enabled.is_none() && u.epsilon_budget.is_none() && !details {
        return Err(ApiError::bad_request(
            "nothing_to_change",
            "give at least one of enabled, epsilon_budget, display_name, email, affiliation",
        ));
    }
    let local = api.accounts.get(&id).is_some();
    if details {
        if !local {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "not_local",
                format!(
                    "{id:?} has no account on {}: their name, e-mail and affiliation live on the member that registered them; change them there",
                    api.node.name()
                ),
            ));
        }
        local_admin(api, admin)?;
    }
    let budget = u
        .epsilon_budget
        .map(|e| micros(e, "epsilon_budget"))
        .transpose()?;
    if let Some(enabled) = u.enabled {
        propose(
            api,
            Kind::SetResearcherStatus(pb::SetResearcherStatus {
                researcher_id: id.clone(),
                enabled,
            }),
        )
        .await?;
    }
    if let Some(b) = budget {
        propose(api, budget_entry(&format!("researcher:{id}"), b)).await?;
    }
    if local {
        api.accounts
            .update(&id, |a| {
                if let Some(e) = u.enabled {
                    a.enabled = e;
                }
                if let Some(v) = u.display_name {
                    a.display_name = v;
                }
                if let Some(v) = u.email {
                    a.email = v;
                }
                if let Some(v) = u.affiliation {
                    a.affiliation = v;
                }
            })
            .map_err(ApiError::internal)?;
    }
    tracing::info!(target: "medtech::api", admin = %admin.sub, researcher = %id, "researcher updated");
    let budget = budget_json(api, &Subject::Researcher(id.clone()))?;
    let enabled = api.node.read()?.state().researcher(&id).map(|r| r.enabled);
    let account = api.accounts.get(&id);
    Ok(json!({
        "username": id,
        "enabled": enabled,
        "budget": budget,
        "display_name": account.as_ref().map(|a| a.display_name.clone()),
        "email": account.as_ref().map(|a| a.email.clone()),
        "affiliation": account.as_ref().map(|a| a.affiliation.clone()),
    }))
}

/// Account management (creating, listing, editing accounts held here) is for this member's own
/// admins: an admin signed in at another member manages that member's accounts, not these.
fn local_admin(api: &ApiState, admin: &auth::Claims) -> Result<(), ApiError> {
    if admin.iss == api.node.name() {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "not_local_admin",
            format!(
                "accounts on {} are managed by its own admins; you are signed in at {}",
                api.node.name(),
                admin.iss
            ),
        ))
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewAccount {
    username: String,
    role: Role,
    #[serde(default)]
    display_name: String,
}

async fn create_account(State(api): S, headers: HeaderMap, body: Body) -> ApiResult {
    let admin = api.user(&headers, &[Role::Admin])?;
    local_admin(&api, &admin)?;
    let n: NewAccount = parse_json(&read_body(body, api.config.max_body_bytes).await?)?;
    if n.role == Role::Researcher {
        return Err(ApiError::bad_request("use_researchers", "register researchers with POST /api/v1/researchers (they need a ledger identity and a budget)"));
    }
    if n.display_name.len() > 256 {
        return Err(ApiError::bad_request(
            "invalid_field",
            "display_name is at most 256 bytes",
        ));
    }
    let password = accounts::generate_password();
    let account = Account {
        display_name: n.display_name,
        ..Account::new(&n.username, n.role)
    };
    let a = Arc::clone(&api);
    let pw = password.clone();
    let r = api
        .hashing(move || a.accounts.create(account, &pw, true))
        .await?;
    match r {
        Ok(()) => {}
        Err(e @ AccountError::Exists(_)) => {
            return Err(ApiError::new(StatusCode::CONFLICT, "exists", e.to_string()))
        }
        Err(e @ AccountError::Invalid(_)) => {
            return Err(ApiError::bad_request("invalid_username", e.to_string()))
        }
        Err(e) => return Err(ApiError::internal(e)),
    }
    tracing::info!(target: "medtech::api", admin = %admin.sub, user = %n.username, role = n.role.as_str(), "account created");
    Ok((StatusCode::CREATED, Json(json!({ "username": n.username, "role": n.role, "password": *password, "must_change_password": true }))).into_response())
}

async fn list_accounts(State(api): S, headers: HeaderMap) -> ApiResult {
    let admin = api.user(&headers, &[Role::Admin])?;
    local_admin(&api, &admin)?;
    let list: Vec<Value> = api
        .accounts
        .list()
        .into_iter()
        .map(|a| json!({ "username": a.username, "role": a.role, "enabled": a.enabled, "display_name": a.display_name, "created_at": rfc3339_ms(a.created_ms) }))
        .collect();
    ok(json!({ "accounts": list }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BudgetLimit {
    epsilon: f64,
}

async fn set_budget(
    State(api): S,
    headers: HeaderMap,
    Path(subject): Path<String>,
    body: Body,
) -> ApiResult {
    let admin = api.user(&headers, &[Role::Admin])?;
    let b: BudgetLimit = parse_json(&read_body(body, api.config.max_body_bytes).await?)?;
    let parsed = match subject.split_once(':') {
        Some(("researcher", r)) => Subject::Researcher(r.to_owned()),
        Some(("dataset", d)) => Subject::Dataset(d.to_owned()),
        None if subject == "global" => Subject::Global,
        _ => {
            return Err(ApiError::bad_request(
                "invalid_subject",
                "the subject is researcher:<id>, dataset:<id> or global",
            ))
        }
    };
    let epsilon = micros(b.epsilon, "epsilon")?;
    match &parsed {
        Subject::Researcher(r) if !api.caught_up(|s| s.researcher(r).is_some()).await? => {
            return Err(ApiError::not_found(format!(
                "no researcher {r:?} on the ledger (register them with POST /api/v1/researchers)"
            )))
        }
        Subject::Dataset(d) if d != DATASET => {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "unknown_dataset",
                format!("the federation's only dataset is {DATASET:?}, not {d:?}"),
            ))
        }
        _ => {}
    }
    let seq = propose(&api, budget_entry(&subject, epsilon)).await?;
    tracing::info!(target: "medtech::api", admin = %admin.sub, subject = %subject, "budget set");
    let mut v = budget_json(&api, &parsed)?;
    v["sequence"] = json!(seq);
    ok(v)
}

/// One pending change as JSON: what it does, who approved it, how many approvals it lacks.
fn pending_json(
    id: &[u8; 32],
    p: &medtech_ledger::state::PendingChange,
    committee: &medtech_ledger::state::CommitteeConfig,
) -> Value {
    let (kind, detail) = kind_json(&p.kind);
    let current = p
        .approvals
        .iter()
        .filter(|m| committee.member(m).is_some())
        .count();
    let waiting: Vec<&String> = committee
        .members
        .iter()
        .map(|m| &m.name)
        .filter(|m| !p.approvals.contains(*m))
        .collect();
    json!({
        "id": hex::encode(id),
        "kind": kind,
        "change": detail,
        "proposed_at": p.proposed_at,
        "approved_by": p.approvals,
        "threshold": committee.threshold,
        "missing": committee.threshold.saturating_sub(current),
        "not_yet_approved_by": waiting,
        // Committee time (ms since the epoch) after which its approvals lapse; null until its
        // wait starts (t members have posted since it was proposed).
        "lapses_at_ms": (p.proposed_ms != 0).then(|| {
            p.proposed_ms
                .saturating_add(medtech_ledger::state::PENDING_CHANGE_TTL_MS)
        }),
    })
}

/// Changes to privacy limits waiting for t members (registering a researcher, raising a
/// limit, re-enabling a researcher): who approved each and how many approvals it lacks.
async fn pending_changes(State(api): S, headers: HeaderMap) -> ApiResult {
    api.user(&headers, STAFF)?;
    ok(pending_changes_json(&api)?)
}

/// `{"pending": [...]}`: every pending change (the API's and the dashboard's view).
pub(crate) fn pending_changes_json(api: &ApiState) -> Result<Value, ApiError> {
    let l = api.node.read()?;
    let st = l.state();
    let list: Vec<Value> = st
        .pending_changes()
        .iter()
        .map(|(id, p)| pending_json(id, p, st.committee()))
        .collect();
    Ok(json!({ "pending": list }))
}

/// This member approves a pending change: it posts the identical change, signed by itself.
/// The `t`-th approval applies it.
async fn approve_change(State(api): S, headers: HeaderMap, Path(id): Path<String>) -> ApiResult {
    let admin = api.user(&headers, &[Role::Admin])?;
    ok(approve_change_core(&api, &admin, &id).await?)
}

/// [`approve_change`] for `admin` (the API's and the dashboard's Approve).
pub(crate) async fn approve_change_core(
    api: &ApiState,
    admin: &auth::Claims,
    id: &str,
) -> Result<Value, ApiError> {
    let key: [u8; 32] = hex::decode(id)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| ApiError::bad_request("invalid_id", "a change id is 64 hex digits"))?;
    let kind = {
        let l = api.node.read()?;
        l.state()
            .pending_changes()
            .get(&key)
            .map(|p| p.kind.clone())
            .ok_or_else(|| {
                ApiError::new(
                    StatusCode::NOT_FOUND,
                    "not_found",
                    format!("no pending change {id}"),
                )
            })?
    };
    let seq = propose(api, kind).await?;
    tracing::info!(target: "medtech::api", admin = %admin.sub, change = %id, "change approved");
    // Answer from this member's state once it has applied the approval (for up to 5 s).
    for _ in 0..100 {
        if api.node.head()?.0 > seq {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let l = api.node.read()?;
    let st = l.state();
    let mut v = match st.pending_changes().get(&key) {
        Some(p) => pending_json(&key, p, st.committee()),
        None => json!({ "id": id, "applied": true }),
    };
    v["sequence"] = json!(seq);
    Ok(v)
}

async fn committee(State(api): S, headers: HeaderMap) -> ApiResult {
    api.user(&headers, STAFF)?;
    ok(committee_json(&api)?)
}

async fn committee_config(State(api): S, headers: HeaderMap) -> ApiResult {
    api.user(&headers, STAFF)?;
    let l = api.node.read()?;
    let c = l.state().committee();
    ok(json!({
        "origin": api.node.origin(),
        "epoch": c.epoch,
        "threshold": c.threshold,
        "committee": hex::encode(medtech_protos::Message::encode_to_vec(&c.to_pb())),
    }))
}

/// Proposes a committee change (a `medtech committee` change file with its approvals). The
/// change is checked against the applied committee first, for a clear refusal; the ledger
/// checks it again when it applies it.
async fn committee_change(State(api): S, headers: HeaderMap, body: Body) -> ApiResult {
    let admin = api.user(&headers, &[Role::Admin])?;
    let bytes = read_body(body, api.config.max_body_bytes).await?;
    let bad = |e: anyhow::Error| ApiError::bad_request("invalid_change", format!("{e:#}"));
    let text = std::str::from_utf8(&bytes)
        .map_err(|_| ApiError::bad_request("invalid_change", "the body is not UTF-8"))?;
    let file = crate::change::ChangeFile::parse(text).map_err(bad)?;
    if file.origin != api.node.origin() {
        return Err(ApiError::bad_request(
            "invalid_change",
            format!(
                "the change is for ledger {:?}, this is {:?}",
                file.origin,
                api.node.origin()
            ),
        ));
    }
    let change = crate::change::to_entry(&file).map_err(bad)?;
    let next = api
        .node
        .read()?
        .state()
        .check_config_change(&change)
        .map_err(|why| ApiError::new(StatusCode::CONFLICT, "refused_by_ledger", why))?;
    let seq = propose(&api, Kind::ConfigChange(change)).await?;
    tracing::info!(target: "medtech::api", admin = %admin.sub, epoch = next.epoch, "committee change applied");
    ok(
        json!({ "sequence": seq, "epoch": next.epoch, "members": next.members.len(), "threshold": next.threshold }),
    )
}

/// The committee's status as this member sees it.
pub(crate) fn committee_json(api: &ApiState) -> Result<Value, ApiError> {
    let l = api.node.read()?;
    let c = l.state().committee();
    let members: Vec<Value> = c
        .members
        .iter()
        .map(|m| {
            let ep = c.endpoints.get(&m.name);
            json!({
                "name": m.name,
                "signing_key": hex::encode(m.key.as_bytes()),
                "raft_id": ep.map(|e| e.raft_id),
                "address": ep.map(|e| e.addr.clone()),
                "tls_cert_sha256": ep.map(|e| e.cert_sha256.clone()),
                "replicated_to": api.node.replication().and_then(|r| ep.and_then(|e| r.get(&e.raft_id).copied().flatten())),
            })
        })
        .collect();
    let cp = l.state().latest_checkpoint();
    let key = &api.view.key;
    Ok(json!({
        "this_member": api.node.name(),
        "origin": api.node.origin(),
        "epoch": c.epoch,
        "threshold": c.threshold,
        "members": members,
        "leader": api.node.leader(),
        "ledger": { "size": l.log().tree().size(), "root": hex::encode(l.log().root()), "rejected": l.state().rejected() },
        "checkpoint": cp.map(|c| json!({
            "size": c.checkpoint.size,
            "root": hex::encode(c.checkpoint.root),
            "cosigners": c.signatures.iter().map(|s| s.name.clone()).collect::<Vec<_>>(),
        })),
        "key": {
            "fingerprint": hex::encode(key.fingerprint()),
            "bits": key.public_key().bits(),
            "parties": key.parties(),
            "threshold": key.threshold(),
        },
    }))
}

// ---- hospital operators: devices ------------------------------------------------------------

async fn upload_devices(State(api): S, headers: HeaderMap, body: Body) -> ApiResult {
    let user = api.user(&headers, &[Role::Operator])?;
    if user.iss != api.node.name() {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "not_this_hospital",
            format!(
                "{} stores only its own operators' uploads; you are an operator of {}",
                api.node.name(),
                user.iss
            ),
        ));
    }
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let format = Format::from_content_type(ct).ok_or_else(|| {
        ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "Content-Type is application/json, application/x-ndjson, text/csv or application/x-protobuf",
        )
    })?;
    let bytes = read_body(body, api.config.max_upload_bytes).await?;
    let started = Instant::now();
    let hospital = api.node.name().to_owned();
    let parsed = tokio::task::spawn_blocking(move || {
        ingest::parse(format, &bytes).map(|p| p.only_hospital(&hospital))
    })
    .await
    .map_err(ApiError::internal)?
    .map_err(|e| ApiError::bad_request("malformed_upload", e.0))?;
    let refused = parsed.errors.len();
    api.metrics
        .records_refused
        .fetch_add(refused as u64, Ordering::Relaxed);
    if parsed.devices.is_empty() {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "no_valid_records",
            format!(
                "none of the {refused} records is valid; first: {}",
                parsed
                    .errors
                    .first()
                    .map_or("(empty upload)".into(), |e| format!(
                        "record {}: {}",
                        e.record, e.error
                    ))
            ),
        ));
    }
    let store = Arc::clone(&api.store);
    let who = user.sub.clone();
    let written = tokio::task::spawn_blocking(move || {
        let devices: Vec<_> = parsed.devices.into_iter().map(|(_, d)| d).collect();
        let mut s = match store.write() {
            Ok(s) => s,
            Err(p) => p.into_inner(),
        };
        s.write(&devices, |done, total| {
            tracing::info!(target: "medtech::ingest", operator = %who, done, total, "ingest progress");
        })
        .map(|w| (w, s.len()))
        .map(|r| (r, parsed.errors))
    })
    .await
    .map_err(ApiError::internal)?
    .map_err(ApiError::internal)?;
    let ((w, total), errors) = written;
    api.metrics
        .records_ingested
        .fetch_add(w.inserted + w.updated, Ordering::Relaxed);
    let secs = started.elapsed().as_secs_f64();
    tracing::info!(target: "medtech::ingest", inserted = w.inserted, updated = w.updated, refused, secs, "upload stored");
    ok(json!({
        "inserted": w.inserted,
        "updated": w.updated,
        "refused": refused,
        "errors": errors.iter().take(1000).collect::<Vec<_>>(),
        "errors_truncated": refused > 1000,
        "devices": total,
        "seconds": secs,
    }))
}

async fn device_stats(State(api): S, headers: HeaderMap) -> ApiResult {
    api.user(&headers, &[Role::Admin, Role::Operator])?;
    let n = api
        .store
        .read()
        .map_err(|_| ApiError::internal("store lock poisoned"))?
        .len();
    ok(json!({ "hospital": api.node.name(), "devices": n }))
}

// ---- auditors: the ledger -------------------------------------------------------------------

async fn ledger_head(State(api): S, headers: HeaderMap) -> ApiResult {
    api.user(&headers, ANYONE)?;
    let (size, root) = api.node.head()?;
    ok(
        json!({ "origin": api.node.origin(), "size": size, "root": hex::encode(root), "leader": api.node.leader(), "member": api.node.name() }),
    )
}

fn kind_json(kind: &Kind) -> (&'static str, Value) {
    match kind {
        Kind::RegisterResearcher(r) => (
            "register_researcher",
            json!({ "researcher": r.researcher_id, "display_name": r.display_name }),
        ),
        Kind::SetResearcherStatus(s) => (
            "set_researcher_status",
            json!({ "researcher": s.researcher_id, "enabled": s.enabled }),
        ),
        Kind::SetBudget(b) => (
            "set_budget",
            json!({ "subject": b.subject, "limit": String::from_utf8_lossy(&b.limit) }),
        ),
        Kind::SubmitQuery(q) => (
            "submit_query",
            json!({
                "query_id": q.query_id,
                "on_behalf_of": q.on_behalf_of,
                "idempotency_key": (!q.idempotency_key.is_empty()).then_some(&q.idempotency_key),
                "query": serde_json::from_slice::<Value>(&q.query).unwrap_or(Value::Null),
                "cost": String::from_utf8_lossy(&q.cost),
            }),
        ),
        Kind::Contribution(c) => (
            "contribution",
            json!({ "query_id": c.query_id, "ciphertexts": c.ciphertexts.len() }),
        ),
        Kind::NoiseCommitment(c) => (
            "noise_commitment",
            json!({ "query_id": c.query_id, "ciphertexts": c.ciphertexts.len() }),
        ),
        Kind::CloseAggregate(c) => (
            "close_aggregate",
            json!({ "query_id": c.query_id, "contributors": c.contributors, "noise_from": c.noise_from }),
        ),
        Kind::PartialDecryption(p) => (
            "partial_decryption",
            json!({ "query_id": p.query_id, "partials": p.partials.len() }),
        ),
        Kind::ReleaseResult(r) => (
            "release_result",
            json!({ "query_id": r.query_id, "result": serde_json::from_slice::<Value>(&r.result).unwrap_or(Value::Null) }),
        ),
        Kind::QueryFailed(f) => (
            "query_failed",
            json!({ "query_id": f.query_id, "reason": f.reason }),
        ),
        Kind::Misbehaviour(m) => (
            "misbehaviour",
            json!({ "culprit": m.culprit, "query_id": m.query_id, "reason": m.reason }),
        ),
        Kind::ConfigChange(c) => (
            "config_change",
            json!({ "approvals": c.approvals.iter().map(|a| a.member.clone()).collect::<Vec<_>>() }),
        ),
        Kind::Cosignature(c) => (
            "cosignature",
            json!({ "size": c.size, "root": hex::encode(&c.root) }),
        ),
        Kind::Note(n) => ("note", json!({ "text": n.text })),
    }
}

async fn ledger_entries(State(api): S, headers: HeaderMap, RawQuery(raw): RawQuery) -> ApiResult {
    api.user(&headers, READERS)?;
    let p = params(raw)?;
    let from = num::<u64>(&p, "from")?.unwrap_or(0);
    let limit = num::<usize>(&p, "limit")?.unwrap_or(100).clamp(1, 1000);
    ok(entries_json(
        &api,
        from,
        limit,
        p.get("kind").map(String::as_str),
    )?)
}

/// Entries a filtered page reads at most before answering: a `kind` that is rare (or absent)
/// costs one bounded scan per request, and `next` says where to go on.
pub(crate) const LEDGER_SCAN_CAP: u64 = 10_000;

/// Up to `limit` entries from sequence `from`, only of `kind_filter` if given: the filter is
/// applied before the limit, so a page holds `limit` matching entries unless the scan reached
/// the end of the ledger or read [`LEDGER_SCAN_CAP`] entries. `next` is the sequence to pass as
/// `from` for the following page (`null` once the ledger's end was read).
pub(crate) fn entries_json(
    api: &ApiState,
    from: u64,
    limit: usize,
    kind_filter: Option<&str>,
) -> Result<Value, ApiError> {
    let size = api.node.head()?.0;
    let mut out = Vec::with_capacity(limit.min(1000));
    let mut seq = from;
    let scan_end = size.min(from.saturating_add(LEDGER_SCAN_CAP));
    'scan: while out.len() < limit && seq < scan_end {
        // Without a filter every entry read is shown: read exactly what is missing.
        let want = if kind_filter.is_some() {
            512
        } else {
            (limit - out.len()) as u64
        };
        let chunk = api
            .node
            .entries_from(seq, want.min(scan_end - seq) as usize)?;
        if chunk.is_empty() {
            break;
        }
        for bytes in &chunk {
            let this = seq;
            seq += 1;
            let leaf = hex::encode(medtech_ledger::merkle::leaf_hash(bytes));
            let Ok(e) = ParsedEntry::decode(bytes) else {
                if kind_filter.is_none() {
                    out.push(
                        json!({ "sequence": this, "leaf_hash": leaf, "error": "does not decode" }),
                    );
                }
                if out.len() == limit {
                    break 'scan;
                }
                continue;
            };
            let (name, detail) = e.kind().map_or(("none", Value::Null), kind_json);
            if kind_filter.is_some_and(|k| k != name) {
                continue;
            }
            let (author_kind, author) = match &e.author {
                AuthorId::Node(n) => ("member", n),
                AuthorId::Researcher(r) => ("researcher", r),
            };
            out.push(json!({
                "sequence": this,
                "leaf_hash": leaf,
                "author": author,
                "author_kind": author_kind,
                "author_seq": e.body.author_seq,
                "timestamp": rfc3339_ms(e.body.timestamp_ms),
                "kind": name,
                "detail": detail,
                "signed_entry": base64::Engine::encode(&base64::engine::general_purpose::STANDARD, bytes),
            }));
            if out.len() == limit {
                break 'scan;
            }
        }
    }
    let next = (seq < size).then_some(seq);
    Ok(json!({ "size": size, "from": from, "entries": out, "next": next }))
}

async fn inclusion_proof(
    State(api): S,
    headers: HeaderMap,
    Path(seq): Path<String>,
    RawQuery(raw): RawQuery,
) -> ApiResult {
    api.user(&headers, READERS)?;
    let seq: u64 = seq.parse().map_err(|_| {
        ApiError::bad_request("invalid_parameter", "the sequence number is an integer")
    })?;
    let p = params(raw)?;
    let l = api.node.read()?;
    let tree = l.log().tree();
    let size = num::<u64>(&p, "size")?.unwrap_or(tree.size());
    if seq >= size || size > tree.size() {
        return Err(ApiError::not_found(format!(
            "entry {seq} is not in a tree of size {size} (this member has {})",
            tree.size()
        )));
    }
    let proof = tree
        .inclusion_proof(seq, size)
        .map_err(|e| ApiError::bad_request("invalid_parameter", e.to_string()))?;
    let root = tree
        .root_at(size)
        .map_err(|e| ApiError::bad_request("invalid_parameter", e.to_string()))?;
    ok(json!({
        "sequence": seq,
        "size": size,
        "leaf_hash": tree.leaf(seq).map(hex::encode),
        "root": hex::encode(root),
        "proof": proof.iter().map(hex::encode).collect::<Vec<_>>(),
    }))
}

async fn consistency_proof(
    State(api): S,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> ApiResult {
    api.user(&headers, READERS)?;
    let p = params(raw)?;
    let l = api.node.read()?;
    let tree = l.log().tree();
    let old = num::<u64>(&p, "old")?.ok_or_else(|| {
        ApiError::bad_request("invalid_parameter", "`old` (a tree size) is required")
    })?;
    let new = num::<u64>(&p, "new")?.unwrap_or(tree.size());
    if old > new || new > tree.size() {
        return Err(ApiError::bad_request(
            "invalid_parameter",
            format!("need old ≤ new ≤ {}", tree.size()),
        ));
    }
    let proof = tree
        .consistency_proof(old, new)
        .map_err(|e| ApiError::bad_request("invalid_parameter", e.to_string()))?;
    let root = |s| {
        tree.root_at(s)
            .map(hex::encode)
            .map_err(|e| ApiError::bad_request("invalid_parameter", e.to_string()))
    };
    ok(
        json!({ "old": old, "new": new, "old_root": root(old)?, "new_root": root(new)?, "proof": proof.iter().map(hex::encode).collect::<Vec<_>>() }),
    )
}

async fn checkpoint(State(api): S, headers: HeaderMap) -> ApiResult {
    api.user(&headers, ANYONE)?;
    let cp = api.node.read()?.state().latest_checkpoint();
    match cp {
        None => Err(ApiError::not_found("no checkpoint has t cosignatures yet")),
        Some(c) => ok(json!({
            "size": c.checkpoint.size,
            "root": hex::encode(c.checkpoint.root),
            "cosigners": c.signatures.iter().map(|s| s.name.clone()).collect::<Vec<_>>(),
            "note": c.to_note(),
        })),
    }
}

async fn ledger_export(State(api): S, headers: HeaderMap) -> ApiResult {
    api.user(&headers, READERS)?;
    let node = api.node.clone();
    let export = tokio::task::spawn_blocking(move || node.export())
        .await
        .map_err(ApiError::internal)??;
    Ok((
        [(
            header::CONTENT_DISPOSITION,
            "attachment; filename=\"ledger-export.json\"",
        )],
        Json(export),
    )
        .into_response())
}

async fn ledger_verify(State(api): S, headers: HeaderMap) -> ApiResult {
    api.user(&headers, READERS)?;
    ok(verify_core(&api).await?)
}

/// Runs the offline verifier over this member's export, replaying the committee's
/// application rules too (every release re-verified under the committee's key).
pub(crate) async fn verify_core(api: &ApiState) -> Result<Value, ApiError> {
    let node = api.node.clone();
    let rules = crate::rules::ReleaseRules::factory(api.view.clone());
    let report = tokio::task::spawn_blocking(move || {
        node.export()
            .map(|e| medtech_ledger::export::verify_with(&e, Some(&rules)))
    })
    .await
    .map_err(ApiError::internal)??;
    Ok(json!({ "passed": report.passed(), "report": report, "text": report.to_text() }))
}
