//! The researcher dashboard, admin console and auditor pages, served by every member under
//! `/ui/`: server-rendered HTML, plain CSS, one small script (the query builder's operator
//! lists), charts as SVG drawn on the server ([`chart`]).
//!
//! Pages call the same operations as the JSON API (`crate::api::handlers`), so both enforce
//! the same rules. Sessions are the API's tokens in a cookie (`HttpOnly`, `SameSite=Strict`,
//! `Secure` unless the node is configured for plain-HTTP development); every form carries a
//! CSRF token derived from the session (or, on the login form, a double-submit cookie). Every
//! page is sent with a strict Content-Security-Policy (no inline script or style), `nosniff`,
//! `frame-ancestors 'none'` and `no-store`.

pub mod chart;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{ConnectInfo, Path, RawQuery, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use medtech_noise::accounting::Subject;
use rand_core::{OsRng, RngCore};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::api::auth::{Claims, Role};
use crate::api::handlers::{self as h, params};
use crate::api::{read_body, ApiError, ApiState};
use crate::query::{Filter, Op, QueryKind, QuerySpec};

type S = State<Arc<ApiState>>;

const COOKIE: &str = "medtech_session";
const LOGIN_CSRF: &str = "medtech_login_csrf";

/// HTML-escapes text for element content and attribute values.
pub fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c => o.push(c),
        }
    }
    o
}

/// The dashboard's routes.
pub(crate) fn routes() -> Router<Arc<ApiState>> {
    Router::new()
        .route("/", get(|| async { Redirect::to("/ui/") }))
        .route("/ui/static/style.css", get(style))
        .route("/ui/static/app.js", get(script))
        .route("/ui/login", get(login_form).post(login))
        .route("/ui/logout", post(logout))
        .route("/ui/password", get(password_form).post(password))
        .route("/ui/", get(home))
        .route("/ui/query", get(builder).post(submit))
        .route("/ui/query/preview", post(preview))
        .route("/ui/queries", get(history))
        .route("/ui/queries/{id}", get(result))
        .route("/ui/admin/researchers", get(researchers).post(register))
        .route("/ui/admin/researchers/{id}", post(update_researcher))
        .route("/ui/admin/changes", get(changes))
        .route("/ui/admin/changes/{id}/approve", post(approve_change))
        .route("/ui/admin/platform", get(platform))
        .route("/ui/admin/committee", get(committee))
        .route("/ui/admin/export", get(export))
        .route("/ui/operator", get(operator))
        .route("/ui/audit", get(audit))
        .route("/ui/audit/verify", post(verify))
        .layer(axum::middleware::from_fn(headers))
}

/// Security headers on every page.
async fn headers(req: Request, next: Next) -> Response {
    let mut r = next.run(req).await;
    let h = r.headers_mut();
    for (k, v) in [
        (
            "content-security-policy",
            "default-src 'none'; style-src 'self'; script-src 'self'; img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
        ("x-content-type-options", "nosniff"),
        ("x-frame-options", "DENY"),
        ("referrer-policy", "same-origin"),
        ("cache-control", "no-store"),
    ] {
        h.insert(k, HeaderValue::from_static(v));
    }
    r
}

async fn style() -> Response {
    (
        [(header::CONTENT_TYPE, "text/css; charset=utf-8")],
        include_str!("style.css"),
    )
        .into_response()
}

async fn script() -> Response {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        include_str!("app.js"),
    )
        .into_response()
}

// ---- sessions --------------------------------------------------------------------------------

fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_owned())
}

fn set_cookie(api: &ApiState, name: &str, value: &str, max_age: u64) -> String {
    format!(
        "{name}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age}{}",
        if api.config.cookie_secure {
            "; Secure"
        } else {
            ""
        }
    )
}

/// The CSRF token of a session: a hash of the session token (unreadable to other sites, which
/// never see the HttpOnly cookie).
fn csrf_of(token: &str) -> String {
    let d = Sha256::digest([b"medtech-csrf/v1\0".as_slice(), token.as_bytes()].concat());
    hex::encode(&d[..16])
}

fn same(a: &str, b: &str) -> bool {
    use subtle::ConstantTimeEq;
    a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

struct Session {
    claims: Claims,
    csrf: String,
}

enum Denied {
    /// Not signed in (or the session expired): to the login page.
    Login,
    /// Signed in, wrong role.
    Forbidden(Box<Session>),
    /// Signed in with a generated password that must be changed first.
    PasswordChange,
}

fn session(api: &ApiState, headers: &HeaderMap, roles: &[Role]) -> Result<Session, Denied> {
    let token = cookie(headers, COOKIE).ok_or(Denied::Login)?;
    let claims = api.verify(&token).map_err(|_| Denied::Login)?;
    let s = Session {
        csrf: csrf_of(&token),
        claims,
    };
    if s.claims.mcp && roles != EVERYONE {
        // A generated password: nothing but changing it (and signing out) until it is changed.
        return Err(Denied::PasswordChange);
    }
    if roles.contains(&s.claims.role) {
        Ok(s)
    } else {
        Err(Denied::Forbidden(Box::new(s)))
    }
}

impl Denied {
    fn into_response(self, api: &ApiState) -> Response {
        match self {
            Denied::Login => Redirect::to("/ui/login").into_response(),
            Denied::PasswordChange => Redirect::to("/ui/password").into_response(),
            Denied::Forbidden(s) => page(
                api,
                StatusCode::FORBIDDEN,
                "Not allowed",
                Some(&*s),
                &format!(
                    "<h1>Not allowed</h1><p class=\"error\">This page is not for the {} role.</p><p><a href=\"/ui/\">Back to your pages</a></p>",
                    s.claims.role.as_str()
                ),
            ),
        }
    }
}

/// Authenticates a page: a response to return at once, or the session.
macro_rules! need {
    ($api:expr, $headers:expr, $roles:expr) => {
        match session(&$api, &$headers, $roles) {
            Ok(s) => s,
            Err(d) => return d.into_response(&$api),
        }
    };
}

/// Reads a urlencoded form body and checks its CSRF token.
async fn form(
    api: &ApiState,
    body: Body,
    csrf: &str,
) -> Result<BTreeMap<String, String>, Response> {
    let bytes = read_body(body, api.config.max_body_bytes)
        .await
        .map_err(IntoResponse::into_response)?;
    let text = String::from_utf8(bytes.to_vec()).map_err(|_| bad_form("the form is not UTF-8"))?;
    let f = params(Some(text)).map_err(IntoResponse::into_response)?;
    match f.get("csrf") {
        Some(c) if same(c, csrf) => Ok(f),
        _ => Err(bad_form(
            "the form's security token is missing or stale; reload the page and try again",
        )),
    }
}

fn bad_form(msg: &str) -> Response {
    (
        StatusCode::FORBIDDEN,
        axum::response::Html(format!(
            "<!doctype html><title>Refused</title><p>{}</p>",
            esc(msg)
        )),
    )
        .into_response()
}

// ---- layout ------------------------------------------------------------------------------------

fn nav(role: Role) -> &'static [(&'static str, &'static str)] {
    match role {
        Role::Researcher => &[("/ui/query", "New query"), ("/ui/queries", "My queries")],
        Role::Admin => &[
            ("/ui/admin/researchers", "Researchers"),
            ("/ui/admin/changes", "Pending changes"),
            ("/ui/admin/platform", "Platform"),
            ("/ui/admin/committee", "Committee"),
            ("/ui/queries", "Query history"),
            ("/ui/audit", "Ledger"),
        ],
        Role::Operator => &[
            ("/ui/operator", "Hospital data"),
            ("/ui/admin/committee", "Committee"),
        ],
        Role::Auditor => &[
            ("/ui/audit", "Ledger"),
            ("/ui/queries", "Query history"),
            ("/ui/admin/committee", "Committee"),
        ],
    }
}

fn page(
    api: &ApiState,
    status: StatusCode,
    title: &str,
    s: Option<&Session>,
    body: &str,
) -> Response {
    page_with(api, status, title, s, body, false)
}

fn page_with(
    api: &ApiState,
    status: StatusCode,
    title: &str,
    s: Option<&Session>,
    body: &str,
    refresh: bool,
) -> Response {
    let mut html = String::with_capacity(body.len() + 2048);
    let _ = write!(
        html,
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">{}<title>{} · MedTech Chain</title><link rel=\"stylesheet\" href=\"/ui/static/style.css\"><script src=\"/ui/static/app.js\" defer></script></head><body><a class=\"skip\" href=\"#main\">Skip to content</a><header><span class=\"brand\">MedTech Chain</span>",
        if refresh { "<meta http-equiv=\"refresh\" content=\"2\">" } else { "" },
        esc(title)
    );
    if let Some(s) = s {
        html.push_str("<nav aria-label=\"Main\">");
        for (href, label) in nav(s.claims.role) {
            let _ = write!(html, "<a href=\"{href}\">{label}</a>");
        }
        let _ = write!(
            html,
            "<a href=\"/ui/password\">Password</a></nav><span class=\"who\">{} ({}) at {}</span><form method=\"post\" action=\"/ui/logout\"><input type=\"hidden\" name=\"csrf\" value=\"{}\"><button class=\"secondary\" type=\"submit\">Sign out</button></form>",
            esc(&s.claims.sub),
            s.claims.role.as_str(),
            esc(api.node.name()),
            s.csrf
        );
    }
    let _ = write!(
        html,
        "</header><main id=\"main\">{body}</main></body></html>"
    );
    (status, axum::response::Html(html)).into_response()
}

fn err_box(e: &ApiError) -> String {
    format!(
        "<p class=\"error\" role=\"alert\">{}</p>",
        esc(&e.message())
    )
}

fn hidden_csrf(s: &Session) -> String {
    format!("<input type=\"hidden\" name=\"csrf\" value=\"{}\">", s.csrf)
}

fn fmt_eps(v: &Value) -> String {
    v.as_f64().map_or("—".into(), |x| format!("{x:.3}"))
}

// ---- login, logout, password --------------------------------------------------------------

async fn login_form(State(api): S) -> Response {
    login_page(&api, None)
}

fn login_page(api: &ApiState, error: Option<&str>) -> Response {
    let mut nonce = [0u8; 16];
    OsRng.fill_bytes(&mut nonce);
    let nonce = hex::encode(nonce);
    let body = format!(
        "<h1>Sign in</h1>{}<form method=\"post\" action=\"/ui/login\" class=\"panel\"><input type=\"hidden\" name=\"csrf\" value=\"{nonce}\"><label for=\"username\">Username</label><input id=\"username\" name=\"username\" autocomplete=\"username\" required><label for=\"password\">Password</label><input id=\"password\" name=\"password\" type=\"password\" autocomplete=\"current-password\" required><p><button type=\"submit\">Sign in</button></p></form><p class=\"muted\">Member {}. Accounts are created by an administrator.</p>",
        error.map(|e| format!("<p class=\"error\" role=\"alert\">{}</p>", esc(e))).unwrap_or_default(),
        esc(api.node.name())
    );
    let mut r = page(
        api,
        if error.is_some() {
            StatusCode::UNAUTHORIZED
        } else {
            StatusCode::OK
        },
        "Sign in",
        None,
        &body,
    );
    if let Ok(v) = HeaderValue::from_str(&set_cookie(api, LOGIN_CSRF, &nonce, 600)) {
        r.headers_mut().append(header::SET_COOKIE, v);
    }
    r
}

async fn login(State(api): S, req: Request) -> Response {
    let peer = crate::api::peer(
        req.extensions().get::<ConnectInfo<std::net::SocketAddr>>(),
        req.headers(),
        &api.config.trusted_proxies,
    );
    let expected = cookie(req.headers(), LOGIN_CSRF).unwrap_or_default();
    let f = match form(&api, req.into_body(), &expected).await {
        Ok(f) if !expected.is_empty() => f,
        Ok(_) => {
            return login_page(
                &api,
                Some("your browser did not keep the sign-in form's cookie; reload and try again"),
            )
        }
        Err(r) => return r,
    };
    let user = f.get("username").cloned().unwrap_or_default();
    let pw = zeroize::Zeroizing::new(f.get("password").cloned().unwrap_or_default());
    match h::login_core(&api, &peer, &user, pw).await {
        Ok((token, claims, must_change)) => {
            let mut r =
                Redirect::to(if must_change { "/ui/password" } else { "/ui/" }).into_response();
            let ttl = claims.exp.saturating_sub(claims.iat);
            if let Ok(v) = HeaderValue::from_str(&set_cookie(&api, COOKIE, &token, ttl)) {
                r.headers_mut().append(header::SET_COOKIE, v);
            }
            if let Ok(v) = HeaderValue::from_str(&set_cookie(&api, LOGIN_CSRF, "", 0)) {
                r.headers_mut().append(header::SET_COOKIE, v);
            }
            r
        }
        Err(e) => login_page(&api, Some(&e.message())),
    }
}

async fn logout(State(api): S, headers: HeaderMap, body: Body) -> Response {
    if let Ok(s) = session(
        &api,
        &headers,
        &[Role::Admin, Role::Researcher, Role::Operator, Role::Auditor],
    ) {
        if let Err(r) = form(&api, body, &s.csrf).await {
            return r;
        }
    }
    let mut r = Redirect::to("/ui/login").into_response();
    if let Ok(v) = HeaderValue::from_str(&set_cookie(&api, COOKIE, "", 0)) {
        r.headers_mut().append(header::SET_COOKIE, v);
    }
    r
}

const EVERYONE: &[Role] = &[Role::Admin, Role::Researcher, Role::Operator, Role::Auditor];

async fn password_form(State(api): S, headers: HeaderMap) -> Response {
    let s = need!(api, headers, EVERYONE);
    password_page(&api, &s, None, StatusCode::OK)
}

fn password_page(api: &ApiState, s: &Session, msg: Option<String>, status: StatusCode) -> Response {
    let must = api
        .accounts
        .get(&s.claims.sub)
        .is_some_and(|a| a.must_change_password);
    let body = format!(
        "<h1>Change password</h1>{}{}<form method=\"post\" action=\"/ui/password\" class=\"panel\">{}<label for=\"old\">Current password</label><input id=\"old\" name=\"old_password\" type=\"password\" autocomplete=\"current-password\" required><label for=\"new\">New password (at least 12 characters)</label><input id=\"new\" name=\"new_password\" type=\"password\" autocomplete=\"new-password\" minlength=\"12\" required><p><button type=\"submit\">Change password</button></p></form>",
        if must { "<p class=\"notice\">Your password was generated for you: choose your own now.</p>" } else { "" },
        msg.unwrap_or_default(),
        hidden_csrf(s)
    );
    page(api, status, "Change password", Some(s), &body)
}

async fn password(State(api): S, headers: HeaderMap, body: Body) -> Response {
    let s = need!(api, headers, EVERYONE);
    let f = match form(&api, body, &s.csrf).await {
        Ok(f) => f,
        Err(r) => return r,
    };
    let old = zeroize::Zeroizing::new(f.get("old_password").cloned().unwrap_or_default());
    let new = zeroize::Zeroizing::new(f.get("new_password").cloned().unwrap_or_default());
    match h::change_password_core(&api, &s.claims, old, new).await {
        Ok((token, claims)) => {
            // The old session is revoked with the old password: carry on with a new one.
            let s = Session {
                csrf: csrf_of(&token),
                claims,
            };
            let mut r = password_page(
                &api,
                &s,
                Some("<p class=\"notice\" role=\"status\">Password changed.</p>".into()),
                StatusCode::OK,
            );
            let ttl = s.claims.exp.saturating_sub(s.claims.iat);
            if let Ok(v) = HeaderValue::from_str(&set_cookie(&api, COOKIE, &token, ttl)) {
                r.headers_mut().append(header::SET_COOKIE, v);
            }
            r
        }
        Err(e) => password_page(&api, &s, Some(err_box(&e)), StatusCode::BAD_REQUEST),
    }
}

async fn home(State(api): S, headers: HeaderMap) -> Response {
    let s = need!(api, headers, EVERYONE);
    Redirect::to(match s.claims.role {
        Role::Researcher => "/ui/query",
        Role::Admin => "/ui/admin/researchers",
        Role::Operator => "/ui/operator",
        Role::Auditor => "/ui/audit",
    })
    .into_response()
}

// ---- researchers: builder, results, history ----------------------------------------------

const OPS: [(&str, &str, &str); 10] = [
    ("equals", "equals", "string integer timestamp bool enum"),
    ("contains", "contains", "string"),
    ("starts_with", "starts with", "string"),
    ("ends_with", "ends with", "string"),
    ("greater_than", ">", "integer"),
    ("less_than", "<", "integer"),
    ("greater_than_or_equal", "≥", "integer"),
    ("less_than_or_equal", "≤", "integer"),
    ("before", "before", "timestamp"),
    ("after", "after", "timestamp"),
];

const FILTER_ROWS: usize = 4;

fn budget_line(api: &ApiState, who: &str) -> String {
    match h::budget_json(api, &Subject::Researcher(who.to_owned())) {
        Ok(b) => format!(
            "<p class=\"panel\">Privacy budget: <strong>ε {} left</strong> of {} (spent {}).</p>",
            fmt_eps(&b["epsilon_remaining"]),
            fmt_eps(&b["epsilon_limit"]),
            fmt_eps(&b["epsilon_spent"])
        ),
        Err(_) => String::new(),
    }
}

async fn builder(State(api): S, headers: HeaderMap) -> Response {
    let s = need!(api, headers, &[Role::Researcher]);
    builder_page(&api, &s, None, &BTreeMap::new(), StatusCode::OK, None)
}

fn selected(f: &BTreeMap<String, String>, k: &str, v: &str) -> &'static str {
    if f.get(k).is_some_and(|x| x == v) {
        " selected"
    } else {
        ""
    }
}

fn builder_page(
    api: &ApiState,
    s: &Session,
    error: Option<&ApiError>,
    f: &BTreeMap<String, String>,
    status: StatusCode,
    preview: Option<&str>,
) -> Response {
    let i = h::interface_json(api);
    let p = &api.view.platform;
    let mut b = String::new();
    let _ = write!(
        b,
        "<h1>New query</h1>{}{}{}",
        budget_line(api, &s.claims.sub),
        error.map(err_box).unwrap_or_default(),
        preview.unwrap_or_default()
    );
    let _ = write!(
        b,
        "<form id=\"query-form\" method=\"post\" action=\"/ui/query\">{}<div class=\"panel grid\">",
        hidden_csrf(s)
    );
    let _ = write!(
        b,
        "<div><label for=\"kind\">Query</label><select id=\"kind\" name=\"kind\"><option value=\"count\"{}>Count</option><option value=\"grouped_count\"{}>Grouped count</option><option value=\"average\"{}>Average</option></select></div>",
        selected(f, "kind", "count"),
        selected(f, "kind", "grouped_count"),
        selected(f, "kind", "average")
    );
    let _ = write!(b, "<div><label for=\"target\">Target field</label><select id=\"target\" name=\"target\"><option value=\"\">(none: count devices)</option>");
    for (kind, label, list) in [
        ("grouped_count", "Group by", p.grouped_targets.clone()),
        (
            "average",
            "Average of",
            p.average_targets.keys().cloned().collect::<Vec<_>>(),
        ),
    ] {
        let _ = write!(b, "<optgroup label=\"{label}\" data-kind=\"{kind}\">");
        for t in list {
            let unit = p
                .average_targets
                .get(&t)
                .filter(|_| kind == "average")
                .map(|r| format!(" ({})", r.unit))
                .unwrap_or_default();
            let _ = write!(
                b,
                "<option value=\"{}\"{}>{}{}</option>",
                esc(&t),
                selected(f, "target", &t),
                esc(&t),
                esc(&unit)
            );
        }
        b.push_str("</optgroup>");
    }
    b.push_str("</select></div>");
    let _ = write!(
        b,
        "<div><label for=\"epsilon\">Privacy cost ε (at most {})</label><input id=\"epsilon\" name=\"epsilon\" type=\"number\" step=\"0.01\" min=\"0.01\" max=\"{}\" value=\"{}\" required></div>",
        fmt_eps(&i["max_epsilon"]),
        fmt_eps(&i["max_epsilon"]),
        esc(f.get("epsilon").map_or("0.5", String::as_str))
    );
    let _ = write!(
        b,
        "<div><label for=\"start\">Synced from (date, optional)</label><input id=\"start\" name=\"start\" type=\"date\" value=\"{}\"></div><div><label for=\"end\">Synced before (date, optional)</label><input id=\"end\" name=\"end\" type=\"date\" value=\"{}\"></div></div>",
        esc(f.get("start").map_or("", String::as_str)),
        esc(f.get("end").map_or("", String::as_str))
    );
    b.push_str("<h2>Filters (all must hold)</h2>");
    let fields = crate::query::field_types();
    for r in 0..FILTER_ROWS {
        let fk = format!("f{r}_field");
        let ok = format!("f{r}_op");
        let vk = format!("f{r}_value");
        let _ = write!(b, "<div class=\"filter panel\"><div><label for=\"{fk}\">Field {}</label><select class=\"field\" id=\"{fk}\" name=\"{fk}\"><option value=\"\" data-type=\"\">—</option>", r + 1);
        for (name, ty) in &fields {
            let _ = write!(
                b,
                "<option value=\"{name}\" data-type=\"{ty}\"{}>{name} ({ty})</option>",
                selected(f, &fk, name)
            );
        }
        let _ = write!(b, "</select></div><div><label for=\"{ok}\">Operator</label><select class=\"op\" id=\"{ok}\" name=\"{ok}\">");
        for (v, label, types) in OPS {
            let _ = write!(
                b,
                "<option value=\"{v}\" data-types=\"{types}\"{}>{label}</option>",
                selected(f, &ok, v)
            );
        }
        let _ = write!(
            b,
            "</select></div><div><label for=\"{vk}\">Value</label><input id=\"{vk}\" name=\"{vk}\" value=\"{}\" placeholder=\"text, number, true/false, date or enum name\"></div></div>",
            esc(f.get(&vk).map_or("", String::as_str))
        );
    }
    b.push_str("<p><button type=\"submit\">Submit query</button> <button id=\"preview-button\" class=\"secondary\" type=\"submit\" formaction=\"/ui/query/preview\">Preview cost and precision</button></p></form>");
    b.push_str("<p class=\"muted\">Every hospital evaluates the query on its own data; only the noisy total is decrypted, by any threshold of committee members. The ε you choose is charged to your budget when the ledger admits the query, and is not refunded.</p>");
    page(api, status, "New query", Some(s), &b)
}

/// A form value into a filter operand: booleans as booleans, dates as midnight UTC, the rest as
/// given (the query compiler parses numbers and names).
fn operand(field: &str, raw: &str) -> Value {
    let t = crate::query::field_types()
        .get(field)
        .copied()
        .unwrap_or("");
    let v = raw.trim();
    match t {
        "bool" => match v {
            "true" | "yes" | "1" => Value::Bool(true),
            "false" | "no" | "0" => Value::Bool(false),
            _ => Value::String(v.to_owned()),
        },
        "timestamp" if v.len() == 10 => Value::String(format!("{v}T00:00:00Z")),
        _ => Value::String(v.to_owned()),
    }
}

fn spec_from_form(f: &BTreeMap<String, String>) -> Result<QuerySpec, ApiError> {
    let bad = |m: String| ApiError::bad_request("invalid_query", m);
    let kind = match f.get("kind").map(String::as_str) {
        Some("count") => QueryKind::Count,
        Some("grouped_count") => QueryKind::GroupedCount,
        Some("average") => QueryKind::Average,
        _ => return Err(bad("choose a query kind".into())),
    };
    let epsilon: f64 = f
        .get("epsilon")
        .and_then(|e| e.trim().parse().ok())
        .ok_or_else(|| bad("ε must be a number".into()))?;
    let mut filters = Vec::new();
    for r in 0..FILTER_ROWS {
        let field = f
            .get(&format!("f{r}_field"))
            .map(|s| s.trim())
            .unwrap_or("");
        if field.is_empty() {
            continue;
        }
        let op_name = f.get(&format!("f{r}_op")).cloned().unwrap_or_default();
        let op: Op = serde_json::from_value(Value::String(op_name.clone()))
            .map_err(|_| bad(format!("filter {}: unknown operator {op_name:?}", r + 1)))?;
        let value = f.get(&format!("f{r}_value")).cloned().unwrap_or_default();
        if value.trim().is_empty() {
            return Err(bad(format!("filter {} on {field}: enter a value", r + 1)));
        }
        filters.push(Filter {
            field: field.to_owned(),
            op,
            value: operand(field, &value),
        });
    }
    let date = |k: &str| {
        f.get(k)
            .map(|v| v.trim())
            .filter(|v| !v.is_empty())
            .map(|v| Value::String(format!("{v}T00:00:00Z")))
    };
    Ok(QuerySpec {
        kind,
        target: f
            .get("target")
            .map(|t| t.trim().to_owned())
            .filter(|t| !t.is_empty()),
        filters,
        start_time: date("start"),
        end_time: date("end"),
        epsilon,
    })
}

async fn submit(State(api): S, headers: HeaderMap, body: Body) -> Response {
    let s = need!(api, headers, &[Role::Researcher]);
    let f = match form(&api, body, &s.csrf).await {
        Ok(f) => f,
        Err(r) => return r,
    };
    let result = match spec_from_form(&f) {
        Ok(spec) => h::submit_core(&api, &s.claims, spec).await,
        Err(e) => Err(e),
    };
    match result {
        Ok(v) => Redirect::to(&format!(
            "/ui/queries/{}",
            v["id"].as_str().unwrap_or_default()
        ))
        .into_response(),
        Err(e) => builder_page(
            &api,
            &s,
            Some(&e),
            &f,
            StatusCode::UNPROCESSABLE_ENTITY,
            None,
        ),
    }
}

/// The builder's "Preview" button (issue 28 §2): the form compiled as a submission would be,
/// shown above the same form with its cost and the 95 % half-width of each output; nothing is
/// charged or recorded.
async fn preview(State(api): S, headers: HeaderMap, body: Body) -> Response {
    let s = need!(api, headers, &[Role::Researcher]);
    let f = match form(&api, body, &s.csrf).await {
        Ok(f) => f,
        Err(r) => return r,
    };
    let result = spec_from_form(&f)
        .and_then(|spec| h::compile_for_api(&api, spec))
        .and_then(|c| h::preview_json(&c, &api.view));
    match result {
        Ok(v) => builder_page(&api, &s, None, &f, StatusCode::OK, Some(&preview_panel(&v))),
        Err(e) => builder_page(
            &api,
            &s,
            Some(&e),
            &f,
            StatusCode::UNPROCESSABLE_ENTITY,
            None,
        ),
    }
}

/// The preview of [`h::preview_json`] as a panel (a live region: it is what changed).
fn preview_panel(v: &Value) -> String {
    let mut b = String::new();
    let _ = write!(
        b,
        "<section class=\"panel\" id=\"preview\" aria-live=\"polite\"><h2>Preview</h2><p>This query would cost <strong>ε {}</strong>; the smallest ε accepted for this kind and target is {}. Nothing has been charged.</p>",
        fmt_eps(&v["epsilon"]),
        // Floors are often below 0.001 (1e-6 for counts): the exact value, not 3 decimals.
        v["min_epsilon"].as_f64().map_or_else(String::new, |e| e.to_string())
    );
    let _ = write!(
        b,
        "<table><thead><tr><th scope=\"col\">Output</th><th scope=\"col\">Confidence</th><th scope=\"col\" class=\"num\">Half-width, {} noise shares</th><th scope=\"col\" class=\"num\">Half-width, {} noise shares</th></tr></thead><tbody>",
        v["noise_shares"]["fewest"], v["noise_shares"]["all"]
    );
    for o in v["outputs"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
    {
        let what = match o["name"].as_str().unwrap_or("") {
            "bins" => format!("each of {} bins", o["coordinates"]),
            name => name.to_owned(),
        };
        let _ = write!(
            b,
            "<tr><td>{}</td><td>{}%</td><td class=\"num\">± {}</td><td class=\"num\">± {}</td></tr>",
            esc(&what),
            o["confidence"].as_f64().map_or(0.0, |c| c * 100.0),
            o["half_width"]["fewest_shares"],
            o["half_width"]["all_shares"]
        );
    }
    b.push_str("</tbody></table><p class=\"muted\">From public parameters only (ε, the committee, the field's range), never from the data: the released value lies within this distance of the true one with the stated confidence. A release lists between the two numbers of noise shares.</p></section>");
    b
}

fn status_span(st: &str) -> String {
    format!("<span class=\"status-{0}\">{0}</span>", esc(st))
}

fn describe(q: &Value) -> String {
    let spec = &q["query"];
    let mut d = match spec["kind"].as_str() {
        Some("count") => "Count".to_owned(),
        Some("grouped_count") => format!(
            "Grouped count by {}",
            spec["target"].as_str().unwrap_or("?")
        ),
        Some("average") => format!("Average of {}", spec["target"].as_str().unwrap_or("?")),
        _ => "?".to_owned(),
    };
    if let Some(fs) = spec["filters"].as_array() {
        for f in fs {
            let _ = write!(
                d,
                "; {} {} {}",
                f["field"].as_str().unwrap_or(""),
                f["op"].as_str().unwrap_or(""),
                f["value"]
            );
        }
    }
    d
}

/// An average in its field's unit: days since 1970 as dates, everything else with its unit.
fn in_unit(v: f64, unit: Option<&str>) -> String {
    match unit {
        Some(u) if u.starts_with("days since 1970") => {
            let secs = (v * 86_400.0).round();
            if secs.is_finite() && secs >= 0.0 {
                let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs as u64);
                humantime::format_rfc3339_seconds(t)
                    .to_string()
                    .chars()
                    .take(10)
                    .collect()
            } else {
                format!("{v:.1} days")
            }
        }
        Some("hours") => format!("{v:.1} h"),
        Some("percent") => format!("{v:.1} %"),
        Some("seconds") => format!("{v:.1} s"),
        Some(u) => format!("{v:.2} {u}"),
        None => format!("{v:.2}"),
    }
}

async fn result(State(api): S, headers: HeaderMap, Path(id): Path<String>) -> Response {
    let s = need!(
        api,
        headers,
        &[Role::Researcher, Role::Admin, Role::Auditor]
    );
    let q = api
        .index
        .read()
        .ok()
        .and_then(|i| i.get(&id).filter(|q| h::visible(&s.claims, q)).cloned())
        // query_json reads the ledger: not under the index's lock.
        .map(|q| h::query_json(&q, &api, &s.claims));
    let Some(q) = q else {
        // Admitted by the ledger but not yet seen by this member's query loop: pending.
        let on_ledger = api.node.read().ok().and_then(|l| {
            l.state()
                .query(&id)
                .map(|r| s.claims.role != Role::Researcher || r.researcher == s.claims.sub)
        });
        if on_ledger == Some(true) {
            let b = format!(
                "<h1>Query {}</h1><p>status {}</p><p class=\"notice\" role=\"status\">The ledger admitted this query; the committee is answering it. This page refreshes itself.</p>",
                esc(&id),
                status_span("pending")
            );
            return page_with(
                &api,
                StatusCode::OK,
                &format!("Query {id}"),
                Some(&s),
                &b,
                true,
            );
        }
        return page(&api, StatusCode::NOT_FOUND, "No such query", Some(&s), &format!("<h1>No such query</h1><p class=\"error\">No query {} of yours is on this member's ledger.</p>", esc(&id)));
    };
    let status = q["status"].as_str().unwrap_or("pending");
    let mut b = String::new();
    let _ = write!(
        b,
        "<h1>Query {}</h1><p>{} · ε {} · status {} · submitted {}</p><p class=\"muted\">{}</p>",
        esc(&id),
        esc(&describe(&q)),
        fmt_eps(&q["epsilon"]),
        status_span(status),
        esc(q["submitted_at"].as_str().unwrap_or("")),
        esc(&format!(
            "{} hospitals contributed so far; {} partial decryptions posted",
            q["contributions"], q["partial_decryptions"]
        ))
    );
    match status {
        "released" => {
            let r = &q["result"];
            let res = &r["result"];
            let list = |k: &str| r[k].as_array().map(|a| a.iter().filter_map(|v| v.as_str()).collect::<Vec<_>>().join(", ")).unwrap_or_default();
            if let Some(c) = res.get("Count") {
                let _ = write!(b, "<p class=\"big\">{} ± {}</p><p>95% interval of the noisy count; the true count lies in it with probability at least 95%.</p>", c["value"], c["half_width"]);
            } else if let Some(bins) = res.get("GroupedCount").and_then(Value::as_array) {
                let labels: Vec<&str> = r["labels"].as_array().map(|a| a.iter().filter_map(|v| v.as_str()).collect()).unwrap_or_default();
                let bars: Vec<chart::Bar<'_>> = labels
                    .iter()
                    .zip(bins)
                    .map(|(l, v)| chart::Bar {
                        label: l,
                        value: v["value"].as_i64().unwrap_or(0).into(),
                        half_width: v["half_width"].as_u64().unwrap_or(0),
                    })
                    .collect();
                b.push_str(&chart::bars(&format!("{} ({} bins, 95% error bars)", describe(&q), bars.len()), &bars));
                b.push_str("<details><summary>Table of all bins</summary><table><thead><tr><th scope=\"col\">Bin</th><th scope=\"col\" class=\"num\">Noisy count</th><th scope=\"col\" class=\"num\">± (95%)</th></tr></thead><tbody>");
                for bar in &bars {
                    let _ = write!(b, "<tr><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td></tr>", esc(bar.label), bar.value, bar.half_width);
                }
                b.push_str("</tbody></table></details>");
            } else if let Some(avg) = r["average"].as_f64() {
                let unit = q["unit"].as_str();
                let interval = q["average_interval"].as_array().and_then(|a| Some((a.first()?.as_f64()?, a.get(1)?.as_f64()?)));
                let _ = write!(b, "<p class=\"big\">{}</p>", esc(&in_unit(avg, unit)));
                if let Some((lo, hi)) = interval {
                    let _ = write!(b, "<p>95% interval: {} to {}</p>", esc(&in_unit(lo, unit)), esc(&in_unit(hi, unit)));
                }
            }
            let _ = write!(
                b,
                "<table><tbody><tr><th scope=\"row\">Hospitals in the result</th><td>{}</td></tr><tr><th scope=\"row\">Noise from</th><td>{}</td></tr><tr><th scope=\"row\">Decrypted by</th><td>{}</td></tr><tr><th scope=\"row\">Released</th><td>{}</td></tr>{}</tbody></table>",
                esc(&list("contributors")),
                esc(&list("noise_from")),
                esc(&list("decrypted_by")),
                esc(q["ended_at"].as_str().unwrap_or("")),
                if r["bundle"].as_array().is_some_and(|b| !b.is_empty()) {
                    format!(
                        "<tr><th scope=\"row\">Decrypted together with</th><td>{}</td></tr>",
                        esc(&list("bundle"))
                    )
                } else {
                    String::new()
                }
            );
        }
        "failed" => {
            let _ = write!(b, "<p class=\"error\">The query failed: {}. Its ε stays charged.</p>", esc(q["failure"].as_str().unwrap_or("")));
        }
        _ => b.push_str("<p class=\"notice\" role=\"status\">The committee is answering this query; this page refreshes itself.</p>"),
    }
    if s.claims.role == Role::Researcher {
        b.push_str(&budget_line(&api, &s.claims.sub));
    }
    page_with(
        &api,
        StatusCode::OK,
        &format!("Query {id}"),
        Some(&s),
        &b,
        status == "pending",
    )
}

async fn history(State(api): S, headers: HeaderMap, RawQuery(raw): RawQuery) -> Response {
    let s = need!(
        api,
        headers,
        &[Role::Researcher, Role::Admin, Role::Auditor]
    );
    let p = params(raw).unwrap_or_default();
    let all = match h::selected(&api, &s.claims, &p) {
        Ok(a) => a,
        Err(e) => {
            return page(
                &api,
                StatusCode::BAD_REQUEST,
                "Queries",
                Some(&s),
                &err_box(&e),
            )
        }
    };
    let pending = all.iter().any(|q| q["status"] == "pending");
    let mut b = format!(
        "<h1>{}</h1>",
        if s.claims.role == Role::Researcher {
            "My queries"
        } else {
            "Query history"
        }
    );
    if s.claims.role != Role::Researcher {
        b.push_str("<p><a class=\"button\" href=\"/ui/admin/export?format=csv\">Export CSV</a> <a class=\"button\" href=\"/ui/admin/export?format=json\">Export JSON</a></p>");
    }
    b.push_str("<table><thead><tr><th scope=\"col\">Query</th><th scope=\"col\">Researcher</th><th scope=\"col\">What</th><th scope=\"col\" class=\"num\">ε</th><th scope=\"col\">Status</th><th scope=\"col\">Submitted</th></tr></thead><tbody>");
    for q in all.iter().take(500) {
        let id = q["id"].as_str().unwrap_or("");
        let _ = write!(
            b,
            "<tr><td><a href=\"/ui/queries/{0}\">{0}</a></td><td>{1}</td><td>{2}</td><td class=\"num\">{3}</td><td>{4}</td><td>{5}</td></tr>",
            esc(id),
            esc(q["researcher"].as_str().unwrap_or("")),
            esc(&describe(q)),
            fmt_eps(&q["epsilon"]),
            status_span(q["status"].as_str().unwrap_or("")),
            esc(q["submitted_at"].as_str().unwrap_or(""))
        );
    }
    if all.is_empty() {
        b.push_str("<tr><td colspan=\"6\">No queries yet.</td></tr>");
    }
    b.push_str("</tbody></table>");
    if pending {
        b.push_str("<p class=\"muted\" role=\"status\">Some queries are pending; this page refreshes itself.</p>");
    }
    page_with(&api, StatusCode::OK, "Queries", Some(&s), &b, pending)
}

// ---- admin ---------------------------------------------------------------------------------------

async fn researchers(State(api): S, headers: HeaderMap) -> Response {
    let s = need!(api, headers, &[Role::Admin]);
    researchers_page(&api, &s, None, StatusCode::OK)
}

fn researchers_page(
    api: &ApiState,
    s: &Session,
    msg: Option<String>,
    status: StatusCode,
) -> Response {
    let mut b = String::from("<h1>Researchers</h1>");
    b.push_str(&msg.unwrap_or_default());
    let list = h::researchers_json(api).unwrap_or(Value::Null);
    b.push_str("<table><thead><tr><th scope=\"col\">Username</th><th scope=\"col\">Name</th><th scope=\"col\">Status</th><th scope=\"col\" class=\"num\">ε limit</th><th scope=\"col\" class=\"num\">spent</th><th scope=\"col\" class=\"num\">left</th><th scope=\"col\">Change</th></tr></thead><tbody>");
    for r in list["researchers"].as_array().into_iter().flatten() {
        let u = r["username"].as_str().unwrap_or("");
        let enabled = r["enabled"].as_bool().unwrap_or(false);
        let _ = write!(
            b,
            "<tr><td>{0}</td><td>{1}</td><td>{2}</td><td class=\"num\">{3}</td><td class=\"num\">{4}</td><td class=\"num\">{5}</td><td class=\"row-actions\"><form method=\"post\" action=\"/ui/admin/researchers/{0}\">{6}<label for=\"b-{0}\" class=\"inline\">ε</label> <input id=\"b-{0}\" name=\"epsilon_budget\" type=\"number\" step=\"0.1\" min=\"0\" value=\"{3}\"> <button type=\"submit\">Set budget</button></form><form method=\"post\" action=\"/ui/admin/researchers/{0}\">{6}<input type=\"hidden\" name=\"enabled\" value=\"{7}\"><button class=\"secondary\" type=\"submit\">{8}</button></form></td></tr>",
            esc(u),
            esc(r["display_name"].as_str().unwrap_or("")),
            if enabled { "enabled" } else { "<span class=\"status-failed\">disabled</span>" },
            fmt_eps(&r["budget"]["epsilon_limit"]),
            fmt_eps(&r["budget"]["epsilon_spent"]),
            fmt_eps(&r["budget"]["epsilon_remaining"]),
            hidden_csrf(s),
            !enabled,
            if enabled { "Disable" } else { "Enable" }
        );
    }
    b.push_str("</tbody></table>");
    let _ = write!(
        b,
        "<h2>Register a researcher</h2><form method=\"post\" action=\"/ui/admin/researchers\" class=\"panel\">{}<div class=\"grid\"><div><label for=\"r-user\">Username</label><input id=\"r-user\" name=\"username\" required pattern=\"[A-Za-z0-9._@-]{{1,64}}\"></div><div><label for=\"r-name\">Full name</label><input id=\"r-name\" name=\"display_name\"></div><div><label for=\"r-mail\">E-mail</label><input id=\"r-mail\" name=\"email\" type=\"email\"></div><div><label for=\"r-aff\">Affiliation</label><input id=\"r-aff\" name=\"affiliation\"></div><div><label for=\"r-eps\">ε budget</label><input id=\"r-eps\" name=\"epsilon_budget\" type=\"number\" step=\"0.1\" min=\"0\" value=\"5\" required></div></div><p><button type=\"submit\">Register</button></p></form><p class=\"muted\">Registration, budgets and disabling are ledger entries: every member applies them. The account (for signing in) lives on this member, {}.</p>",
        hidden_csrf(s),
        esc(api.node.name())
    );
    page(api, status, "Researchers", Some(s), &b)
}

async fn register(State(api): S, headers: HeaderMap, body: Body) -> Response {
    let s = need!(api, headers, &[Role::Admin]);
    let f = match form(&api, body, &s.csrf).await {
        Ok(f) => f,
        Err(r) => return r,
    };
    let get = |k: &str| f.get(k).map(|v| v.trim().to_owned()).unwrap_or_default();
    let budget = get("epsilon_budget").parse::<f64>();
    let Ok(epsilon_budget) = budget else {
        return researchers_page(
            &api,
            &s,
            Some("<p class=\"error\" role=\"alert\">The budget must be a number.</p>".into()),
            StatusCode::BAD_REQUEST,
        );
    };
    let r = h::NewResearcher {
        username: get("username"),
        display_name: get("display_name"),
        email: get("email"),
        affiliation: get("affiliation"),
        epsilon_budget,
        public_key: None,
    };
    match h::register_core(&api, &s.claims, r).await {
        Ok(v) => researchers_page(
            &api,
            &s,
            Some(format!(
                "<div class=\"notice\" role=\"status\"><p>Registered <strong>{}</strong>. Their password, shown only now: <code id=\"new-password\">{}</code></p><p>They must change it at first sign-in.</p></div>",
                esc(v["username"].as_str().unwrap_or("")),
                esc(v["password"].as_str().unwrap_or(""))
            )),
            StatusCode::CREATED,
        ),
        Err(e) => researchers_page(&api, &s, Some(err_box(&e)), e.status()),
    }
}

async fn update_researcher(
    State(api): S,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Body,
) -> Response {
    let s = need!(api, headers, &[Role::Admin]);
    let f = match form(&api, body, &s.csrf).await {
        Ok(f) => f,
        Err(r) => return r,
    };
    let mut u = h::ResearcherUpdate::default();
    if let Some(e) = f.get("enabled") {
        u.enabled = Some(e == "true");
    }
    if let Some(b) = f.get("epsilon_budget") {
        match b.trim().parse::<f64>() {
            Ok(v) => u.epsilon_budget = Some(v),
            Err(_) => {
                return researchers_page(
                    &api,
                    &s,
                    Some(
                        "<p class=\"error\" role=\"alert\">The budget must be a number.</p>".into(),
                    ),
                    StatusCode::BAD_REQUEST,
                )
            }
        }
    }
    match h::update_researcher_core(&api, &s.claims, &id, u).await {
        Ok(_) => researchers_page(
            &api,
            &s,
            Some(format!(
                "<p class=\"notice\" role=\"status\">Updated {}.</p>",
                esc(&id)
            )),
            StatusCode::OK,
        ),
        Err(e) => researchers_page(&api, &s, Some(err_box(&e)), e.status()),
    }
}

/// Pending privacy-limit changes (issue 24 §3): each change, who approved it, how many more
/// approvals it needs, and an Approve button (this member posts the identical change).
async fn changes(State(api): S, headers: HeaderMap) -> Response {
    let s = need!(api, headers, &[Role::Admin]);
    changes_page(&api, &s, None, StatusCode::OK)
}

async fn approve_change(
    State(api): S,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Body,
) -> Response {
    let s = need!(api, headers, &[Role::Admin]);
    if let Err(r) = form(&api, body, &s.csrf).await {
        return r;
    }
    match h::approve_change_core(&api, &s.claims, &id).await {
        Ok(v) => {
            let what = if v["applied"] == true {
                "approved; it is applied".to_owned()
            } else {
                format!("approved; it needs {} more", v["missing"])
            };
            let msg = format!(
                "<p class=\"notice\" role=\"status\">Change <code>{}</code> {}.</p>",
                esc(&id),
                esc(&what)
            );
            changes_page(&api, &s, Some(msg), StatusCode::OK)
        }
        Err(e) => changes_page(&api, &s, Some(err_box(&e)), e.status()),
    }
}

fn changes_page(api: &ApiState, s: &Session, msg: Option<String>, status: StatusCode) -> Response {
    let mut b = String::from("<h1>Pending changes</h1>");
    b.push_str(&msg.unwrap_or_default());
    let list = match h::pending_changes_json(api) {
        Ok(v) => v,
        Err(e) => return page(api, e.status(), "Pending changes", Some(s), &err_box(&e)),
    };
    let pending = list["pending"].as_array().cloned().unwrap_or_default();
    if pending.is_empty() {
        b.push_str("<p class=\"muted\" id=\"no-pending\">No change is waiting for approvals.</p>");
    } else {
        b.push_str("<table id=\"pending-changes\"><thead><tr><th scope=\"col\">Change</th><th scope=\"col\">Details</th><th scope=\"col\">Approved by</th><th scope=\"col\" class=\"num\">Still needs</th><th scope=\"col\">Not yet approved by</th><th scope=\"col\">Approve</th></tr></thead><tbody>");
        let me = api.node.name();
        for c in &pending {
            let id = c["id"].as_str().unwrap_or("");
            let names = |k: &str| -> Vec<String> {
                c[k].as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .collect()
            };
            let approved = names("approved_by");
            let action = if approved.iter().any(|a| a == me) {
                "<span class=\"muted\">approved by this member</span>".to_owned()
            } else {
                format!(
                    "<form method=\"post\" action=\"/ui/admin/changes/{}/approve\">{}<button type=\"submit\">Approve</button></form>",
                    esc(id),
                    hidden_csrf(s)
                )
            };
            let _ = write!(
                b,
                "<tr data-change=\"{}\"><td>{}<br><code class=\"muted\">{}</code></td><td><code>{}</code></td><td>{}</td><td class=\"num\">{}</td><td>{}</td><td class=\"row-actions\">{}</td></tr>",
                esc(id),
                esc(c["kind"].as_str().unwrap_or("")),
                esc(id.get(..16).unwrap_or(id)),
                esc(&c["change"].to_string()),
                esc(&approved.join(", ")),
                c["missing"],
                esc(&names("not_yet_approved_by").join(", ")),
                action
            );
        }
        b.push_str("</tbody></table>");
    }
    let _ = write!(
        b,
        "<p class=\"muted\">Registering a researcher, raising a budget limit and re-enabling a researcher take {} members' identical entries; Approve posts this member's ({}).</p>",
        api.view.threshold,
        esc(api.node.name())
    );
    page(api, status, "Pending changes", Some(s), &b)
}

async fn platform(State(api): S, headers: HeaderMap) -> Response {
    let s = need!(api, headers, &[Role::Admin]);
    let p = &api.view.platform;
    let mut b = String::from("<h1>Platform configuration</h1><p class=\"muted\">What every member enforces identically. It is compiled into the node (changing it must reach every member at once, through the ledger; that is not built yet), so it is shown here read-only.</p>");
    let _ = write!(
        b,
        "<table><tbody><tr><th scope=\"row\">Count may name</th><td>{}</td></tr><tr><th scope=\"row\">Grouped count may group by</th><td>{}</td></tr><tr><th scope=\"row\">Largest ε per query</th><td>{}</td></tr><tr><th scope=\"row\">Suggested ε in the builder</th><td>0.5</td></tr></tbody></table>",
        esc(&p.count_targets.join(", ")),
        esc(&p.grouped_targets.join(", ")),
        p.max_epsilon_micros as f64 / 1e6
    );
    b.push_str("<h2>Averages: clamping bounds</h2><table><thead><tr><th scope=\"col\">Field</th><th scope=\"col\" class=\"num\">Lower</th><th scope=\"col\" class=\"num\">Upper</th><th scope=\"col\">Unit</th></tr></thead><tbody>");
    for (f, r) in &p.average_targets {
        let _ = write!(
            b,
            "<tr><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td>{}</td></tr>",
            esc(f),
            r.lower,
            r.upper,
            esc(&r.unit)
        );
    }
    b.push_str("</tbody></table><h2>Public bin lists</h2>");
    for t in &p.grouped_targets {
        if let Some(bins) = p.bins(t) {
            let _ = write!(
                b,
                "<p><strong>{}</strong> ({} bins): {}</p>",
                esc(t),
                bins.len(),
                esc(&bins.join(", "))
            );
        }
    }
    page(&api, StatusCode::OK, "Platform", Some(&s), &b)
}

async fn committee(State(api): S, headers: HeaderMap) -> Response {
    let s = need!(api, headers, &[Role::Admin, Role::Operator, Role::Auditor]);
    let c = match h::committee_json(&api) {
        Ok(c) => c,
        Err(e) => return page(&api, e.status(), "Committee", Some(&s), &err_box(&e)),
    };
    let leader = c["leader"].as_u64();
    let cosigners: Vec<&str> = c["checkpoint"]["cosigners"]
        .as_array()
        .map(|a| a.iter().filter_map(|v| v.as_str()).collect())
        .unwrap_or_default();
    let size = c["ledger"]["size"].as_u64().unwrap_or(0);
    let mut b = format!(
        "<h1>Committee</h1><p>Any {} of {} members decrypt (key {} bits, fingerprint <code>{}</code>). This page is served by {}.</p>",
        c["key"]["threshold"],
        c["key"]["parties"],
        c["key"]["bits"],
        esc(c["key"]["fingerprint"].as_str().unwrap_or("")),
        esc(api.node.name())
    );
    b.push_str("<table><thead><tr><th scope=\"col\">Member</th><th scope=\"col\" class=\"num\">Raft id</th><th scope=\"col\">Address</th><th scope=\"col\">Role</th><th scope=\"col\">Replicated to</th><th scope=\"col\">Cosigned latest checkpoint</th></tr></thead><tbody>");
    for m in c["members"].as_array().into_iter().flatten() {
        let name = m["name"].as_str().unwrap_or("");
        let id = m["raft_id"].as_u64();
        let role = if id.is_some() && id == leader {
            "leader"
        } else {
            "follower"
        };
        let repl = match (m["replicated_to"].as_u64(), leader.is_some()) {
            (Some(i), _) => format!("log index {i}"),
            (None, true) => "(known to the leader)".into(),
            (None, false) => "no leader".into(),
        };
        let _ = write!(
            b,
            "<tr><td>{}</td><td class=\"num\">{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(name),
            id.map_or("—".into(), |i| i.to_string()),
            esc(m["address"].as_str().unwrap_or("")),
            role,
            esc(&repl),
            if cosigners.contains(&name) { "<span class=\"pass\">yes</span>" } else { "no" }
        );
    }
    let _ = write!(
        b,
        "</tbody></table><h2>Ledger</h2><p>{size} entries, root <code>{}</code>; {} entries rejected by the rules so far.</p><p>Latest checkpoint with a quorum of cosignatures: {}</p>",
        esc(c["ledger"]["root"].as_str().unwrap_or("")),
        c["ledger"]["rejected"],
        match c["checkpoint"]["size"].as_u64() {
            Some(sz) => format!("size {sz}, cosigned by {}", esc(&cosigners.join(", "))),
            None => "none yet".into(),
        }
    );
    page(&api, StatusCode::OK, "Committee", Some(&s), &b)
}

async fn export(State(api): S, headers: HeaderMap, RawQuery(raw): RawQuery) -> Response {
    let s = need!(api, headers, &[Role::Admin, Role::Auditor]);
    let p = params(raw).unwrap_or_default();
    let all = match h::selected(&api, &s.claims, &p) {
        Ok(a) => a,
        Err(e) => return e.into_response(),
    };
    match p.get("format").map_or("csv", String::as_str) {
        "json" => (
            [
                (header::CONTENT_TYPE, "application/json"),
                (
                    header::CONTENT_DISPOSITION,
                    "attachment; filename=\"queries.json\"",
                ),
            ],
            serde_json::to_vec_pretty(&all).unwrap_or_default(),
        )
            .into_response(),
        _ => match h::history_csv(&all) {
            Ok(bytes) => (
                [
                    (header::CONTENT_TYPE, "text/csv; charset=utf-8"),
                    (
                        header::CONTENT_DISPOSITION,
                        "attachment; filename=\"queries.csv\"",
                    ),
                ],
                bytes,
            )
                .into_response(),
            Err(e) => e.into_response(),
        },
    }
}

// ---- operators ---------------------------------------------------------------------------------

async fn operator(State(api): S, headers: HeaderMap) -> Response {
    let s = need!(api, headers, &[Role::Operator]);
    let n = api.store.read().map(|s| s.len()).unwrap_or(0);
    let b = format!(
        "<h1>Hospital data</h1><p class=\"big\">{n} devices</p><p>held by {} in its own store. Records never leave this hospital: queries see only encrypted, range-proved totals.</p><h2>Uploading</h2><p>Upload JSON, NDJSON, CSV or protobuf with <code>POST /api/v1/devices</code> (see the operations guide); each upload reports every refused record by number and UDI.</p><pre>curl -X POST http://HOST/api/v1/devices -H \"authorization: Bearer $TOKEN\" -H 'content-type: text/csv' --data-binary @devices.csv</pre>",
        esc(api.node.name())
    );
    page(&api, StatusCode::OK, "Hospital data", Some(&s), &b)
}

// ---- auditors ------------------------------------------------------------------------------------

const KINDS: [&str; 14] = [
    "register_researcher",
    "set_researcher_status",
    "set_budget",
    "submit_query",
    "contribution",
    "noise_commitment",
    "close_aggregate",
    "partial_decryption",
    "release_result",
    "query_failed",
    "misbehaviour",
    "config_change",
    "cosignature",
    "note",
];

async fn audit(State(api): S, headers: HeaderMap, RawQuery(raw): RawQuery) -> Response {
    let s = need!(api, headers, &[Role::Auditor, Role::Admin]);
    audit_page(&api, &s, raw, None)
}

fn audit_page(
    api: &ApiState,
    s: &Session,
    raw: Option<String>,
    verdict: Option<Value>,
) -> Response {
    let p = params(raw).unwrap_or_default();
    let from = p
        .get("from")
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0);
    let kind = p
        .get("kind")
        .filter(|k| KINDS.contains(&k.as_str()))
        .cloned();
    let mut b = String::from("<h1>Ledger</h1>");
    if let Some(v) = verdict {
        let passed = v["passed"].as_bool().unwrap_or(false);
        let _ = write!(
            b,
            "<div class=\"panel\" role=\"status\"><h2>Verification: <span class=\"{}\">{}</span></h2><pre>{}</pre></div>",
            if passed { "pass" } else { "fail" },
            if passed { "PASSED" } else { "FAILED" },
            esc(v["text"].as_str().unwrap_or(""))
        );
    }
    match api
        .node
        .read()
        .ok()
        .and_then(|l| l.state().latest_checkpoint())
    {
        Some(c) => {
            let _ = write!(
                b,
                "<h2>Latest cosigned checkpoint</h2><p>Size {}, root <code>{}</code>, cosigned by {}.</p><details><summary>Signed note</summary><pre>{}</pre></details>",
                c.checkpoint.size,
                hex::encode(c.checkpoint.root),
                esc(&c.signatures.iter().map(|x| x.name.clone()).collect::<Vec<_>>().join(", ")),
                esc(&c.to_note())
            );
        }
        None => b.push_str("<h2>Latest cosigned checkpoint</h2><p>None with a quorum yet.</p>"),
    }
    let _ = write!(
        b,
        "<form method=\"post\" action=\"/ui/audit/verify\">{}<button type=\"submit\">Verify the whole ledger</button> <span class=\"muted\">runs the offline verifier over this member's export: hash tree, every signature and cosignature, the rules</span></form>",
        hidden_csrf(s)
    );
    b.push_str("<h2>Entries</h2><form method=\"get\" action=\"/ui/audit\" class=\"grid\"><div><label for=\"from\">From sequence</label>");
    let _ = write!(b, "<input id=\"from\" name=\"from\" type=\"number\" min=\"0\" value=\"{from}\"></div><div><label for=\"kind\">Kind</label><select id=\"kind\" name=\"kind\"><option value=\"\">all</option>");
    for k in KINDS {
        let _ = write!(
            b,
            "<option value=\"{k}\"{}>{k}</option>",
            if kind.as_deref() == Some(k) {
                " selected"
            } else {
                ""
            }
        );
    }
    b.push_str("</select></div><div><label for=\"go\">&nbsp;</label><button id=\"go\" type=\"submit\">Show</button></div></form>");
    let entries = h::entries_json(api, from, 50, kind.as_deref()).unwrap_or(Value::Null);
    b.push_str("<table><thead><tr><th scope=\"col\" class=\"num\">#</th><th scope=\"col\">Kind</th><th scope=\"col\">Author</th><th scope=\"col\">Time</th><th scope=\"col\">Detail</th></tr></thead><tbody>");
    for e in entries["entries"].as_array().into_iter().flatten() {
        let mut detail = e["detail"].to_string();
        if detail.len() > 200 {
            detail = format!("{}…", detail.chars().take(200).collect::<String>());
        }
        let _ = write!(
            b,
            "<tr><td class=\"num\">{}</td><td>{}</td><td>{}</td><td>{}</td><td><code>{}</code></td></tr>",
            e["sequence"],
            esc(e["kind"].as_str().unwrap_or("?")),
            esc(e["author"].as_str().unwrap_or("")),
            esc(e["timestamp"].as_str().unwrap_or("")),
            esc(&detail)
        );
    }
    b.push_str("</tbody></table>");
    let size = entries["size"].as_u64().unwrap_or(0);
    let k = kind.map(|k| format!("&amp;kind={k}")).unwrap_or_default();
    if from > 0 {
        let _ = write!(
            b,
            "<a href=\"/ui/audit?from={}{k}\">← earlier</a> ",
            from.saturating_sub(50)
        );
    }
    if let Some(next) = entries["next"].as_u64() {
        let _ = write!(b, "<a href=\"/ui/audit?from={next}{k}\">later →</a>");
    }
    let _ = write!(b, "<p class=\"muted\">{size} entries in all.</p>");
    page(api, StatusCode::OK, "Ledger", Some(s), &b)
}

async fn verify(State(api): S, headers: HeaderMap, body: Body) -> Response {
    let s = need!(api, headers, &[Role::Auditor, Role::Admin]);
    if let Err(r) = form(&api, body, &s.csrf).await {
        return r;
    }
    match h::verify_core(&api).await {
        Ok(v) => audit_page(&api, &s, None, Some(v)),
        Err(e) => page(&api, e.status(), "Ledger", Some(&s), &err_box(&e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_covers_html_and_attributes() {
        assert_eq!(
            esc("<a href=\"x\">'&'</a>"),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
    }

    #[test]
    fn averages_are_shown_in_their_unit() {
        assert_eq!(
            in_unit(18_262.0, Some("days since 1970-01-01")),
            "2020-01-01"
        );
        assert_eq!(in_unit(5002.71, Some("hours")), "5002.7 h");
    }

    #[test]
    fn form_filters_become_typed_operands() {
        let mut f = BTreeMap::new();
        for (k, v) in [
            ("kind", "grouped_count"),
            ("target", "speciality"),
            ("epsilon", "0.5"),
            ("f0_field", "active_status"),
            ("f0_op", "equals"),
            ("f0_value", "true"),
            ("f1_field", "production_date"),
            ("f1_op", "after"),
            ("f1_value", "2020-01-01"),
            ("f2_field", ""),
        ] {
            f.insert(k.to_owned(), v.to_owned());
        }
        let s = spec_from_form(&f).unwrap();
        assert_eq!(s.filters.len(), 2);
        assert_eq!(s.filters[0].value, Value::Bool(true));
        assert_eq!(
            s.filters[1].value,
            Value::String("2020-01-01T00:00:00Z".into())
        );
        f.insert("f3_field".into(), "usage_hours".into());
        f.insert("f3_op".into(), "greater_than".into());
        assert!(
            spec_from_form(&f).is_err(),
            "a filter without a value is refused"
        );
    }

    #[test]
    fn csrf_tokens_differ_per_session_and_compare_exactly() {
        let a = csrf_of("mt1.a.b");
        assert_ne!(a, csrf_of("mt1.a.c"));
        assert!(same(&a, &csrf_of("mt1.a.b")));
        assert!(!same(&a, &a[..31]));
    }
}
