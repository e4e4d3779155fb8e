//! The OpenAPI 3.0 document of the node's API, built from one table of endpoints, and its
//! Markdown rendering (`docs/api.md`). Tests check that every documented route answers (and
//! needs the documented authentication) and that the files in `docs/` are current:
//! `medtech api-docs --out docs` rewrites them.

use serde_json::{json, Map, Value};

/// One documented endpoint.
pub struct Endpoint {
    /// HTTP method, lower case.
    pub method: &'static str,
    /// Path, with `{param}`s.
    pub path: &'static str,
    /// One line.
    pub summary: &'static str,
    /// Roles allowed (empty: no authentication).
    pub roles: &'static [&'static str],
    /// Request body schema (a component name), if any.
    pub body: Option<&'static str>,
    /// Query parameters: (name, description).
    pub params: &'static [(&'static str, &'static str)],
    /// Optional request headers: (name, description).
    pub headers: &'static [(&'static str, &'static str)],
    /// Success status.
    pub ok: u16,
}

const A: &[&str] = &["admin"];
const R: &[&str] = &["researcher"];
const O: &[&str] = &["operator"];
const AA: &[&str] = &["admin", "auditor"];
const RAA: &[&str] = &["researcher", "admin", "auditor"];
const STAFF: &[&str] = &["admin", "operator", "auditor"];
const ALL: &[&str] = &["admin", "researcher", "operator", "auditor"];

/// The `Idempotency-Key` request header of `POST /api/v1/queries`.
pub const IDEMPOTENCY_KEY: &str = "Idempotency-Key";

const IDEMPOTENCY_KEY_DOC: &str = "Your key for this submission (printable ASCII, 1 to 255 bytes; 400 invalid_idempotency_key otherwise), e.g. a fresh UUID per query, reused only to retry it after a timeout or a 5xx. The ledger admits one query per (researcher, key), so a retry through any member, after a leader change too, is charged once.";

/// Every endpoint.
pub const ENDPOINTS: &[Endpoint] = &[
    Endpoint { method: "get", path: "/health", summary: "Liveness: the process answers.", roles: &[], body: None, params: &[], headers: &[], ok: 200 },
    Endpoint { method: "get", path: "/ready", summary: "Readiness: the member knows a Raft leader and reads its ledger (503 otherwise).", roles: &[], body: None, params: &[], headers: &[], ok: 200 },
    Endpoint { method: "get", path: "/metrics", summary: "Prometheus metrics (a session token of an admin or operator, or the node's static metrics token).", roles: &["admin", "operator"], body: None, params: &[], headers: &[], ok: 200 },
    Endpoint { method: "get", path: "/api/v1/openapi.json", summary: "This document.", roles: &[], body: None, params: &[], headers: &[], ok: 200 },
    Endpoint { method: "post", path: "/api/v1/login", summary: "Sign in; returns a short-lived bearer token accepted by every committee member. Rate-limited per client address (from `X-Forwarded-For` only when the peer is one of the node's `trusted_proxies`), per address and username, and for everyone; a few password hashes run at once, the rest wait. The token of an account whose password was generated (`must_change_password`) is good only for POST /api/v1/password and GET /api/v1/me (403 password_change_required elsewhere).", roles: &[], body: Some("Login"), params: &[], headers: &[], ok: 200 },
    Endpoint { method: "post", path: "/api/v1/password", summary: "Change your password (on the member that holds your account). Returns a new token; that member refuses every token issued before the change (other members accept them until they expire).", roles: ALL, body: Some("ChangePassword"), params: &[], headers: &[], ok: 200 },
    Endpoint { method: "get", path: "/api/v1/me", summary: "Who the token says you are.", roles: ALL, body: None, params: &[], headers: &[], ok: 200 },
    Endpoint { method: "get", path: "/api/v1/interface", summary: "The query interface: kinds, allowed targets, filter fields and their operators, public bin lists, clamp ranges, ε cap.", roles: ALL, body: None, params: &[], headers: &[], ok: 200 },
    Endpoint { method: "post", path: "/api/v1/queries", summary: "Submit a query. The ledger charges your budget in the entry that admits it (403 budget_exceeded if it does not fit); the committee answers it asynchronously. An ε below the smallest whose noise can be proven within its bound is refused before anything is charged (422 epsilon_below_floor; the error's min_epsilon names the smallest ε accepted for that kind and target). At most max_queries_in_flight (default 4) of your queries may be open at once: beyond, 429 too_many_queries_in_flight with Retry-After, nothing charged. With an Idempotency-Key, a retry is charged once: a repeat of an admitted request under the same key is answered with the first 202 (same id, header Idempotent-Replayed: true), never 429, and a different request under a used key is 422 idempotency_key_reused; keys are yours alone (every member de-duplicates them from the ledger).", roles: R, body: Some("QuerySpec"), params: &[], headers: &[(IDEMPOTENCY_KEY, IDEMPOTENCY_KEY_DOC)], ok: 202 },
    Endpoint { method: "post", path: "/api/v1/queries/preview", summary: "What a query would cost and how precise its result would be, without submitting it: nothing is proposed, charged or recorded. Compiles the body as POST /api/v1/queries does (same 422 invalid_query and epsilon_below_floor) and answers with epsilon (what would be charged), min_epsilon (the smallest ε accepted for this kind and target), labels, noise_shares (fewest: the n − f shares a close may list; all: n), and for each noised output (count, bins, or an Average's sum and count) its half_width and std_dev for the fewest and for all noise shares, at its confidence (0.95; an Average's two outputs 0.975 each, so that both hold together with probability ≥ 0.95). These depend on public parameters only, never on the data. Also your and the dataset's budget, and affordable (whether both cover epsilon now).", roles: R, body: Some("QuerySpec"), params: &[], headers: &[], ok: 200 },
    Endpoint { method: "get", path: "/api/v1/queries", summary: "Query history, newest first (researchers see their own): total (every query matching the filters), queries (one page) and next (pass it as before for the following page; null on the last).", roles: RAA, body: None, params: &[("status", "pending, released or failed"), ("researcher", "only this researcher's"), ("limit", "at most this many (default 100, max 1000)"), ("before", "only queries older than this ledger sequence: the previous page's next")], headers: &[], ok: 200 },
    Endpoint { method: "get", path: "/api/v1/queries/export", summary: "Query history as a JSON or CSV download.", roles: AA, body: None, params: &[("format", "json (default) or csv"), ("status", "pending, released or failed"), ("researcher", "only this researcher's")], headers: &[], ok: 200 },
    Endpoint { method: "get", path: "/api/v1/queries/{id}", summary: "One query: status, and once released the noisy result with its confidence intervals and who contributed; `table` flattens it for tools: labels, values (raw noisy integers; an average as a number) and intervals ([low, high] at confidence), one row per count, bin or average. A researcher sees, of the queries decrypted together with it (`bundle`), only their own. An id not on the ledger, or not yours, is 404 at once whatever `wait`.", roles: RAA, body: None, params: &[("wait", "wait up to this many seconds (max 60) for the query to end")], headers: &[], ok: 200 },
    Endpoint { method: "get", path: "/api/v1/budget", summary: "Your ε budget and the dataset's: limit, spent, remaining.", roles: R, body: None, params: &[], headers: &[], ok: 200 },
    Endpoint { method: "post", path: "/api/v1/researchers", summary: "Register a researcher: a ledger identity, a budget, and an account here with a generated password (shown once). The registration and a first or raised budget wait for t members to approve (GET /api/v1/changes/pending). For admins signed in at this member (403 not_local_admin otherwise).", roles: A, body: Some("NewResearcher"), params: &[], headers: &[], ok: 201 },
    Endpoint { method: "get", path: "/api/v1/researchers", summary: "Every researcher on the ledger with status and budget.", roles: AA, body: None, params: &[], headers: &[], ok: 200 },
    Endpoint { method: "patch", path: "/api/v1/researchers/{id}", summary: "Enable or disable a researcher (on the ledger: every member), change their budget or details. Details (name, e-mail, affiliation) change only on the member holding the account, by its admins (409 not_local elsewhere); an empty change is 400 nothing_to_change. Answers with what is now recorded.", roles: A, body: Some("ResearcherUpdate"), params: &[], headers: &[], ok: 200 },
    Endpoint { method: "post", path: "/api/v1/accounts", summary: "Create an admin, operator or auditor account on this member (generated password, shown once). For admins signed in at this member (403 not_local_admin otherwise).", roles: A, body: Some("NewAccount"), params: &[], headers: &[], ok: 201 },
    Endpoint { method: "get", path: "/api/v1/accounts", summary: "Accounts on this member. For admins signed in at this member.", roles: A, body: None, params: &[], headers: &[], ok: 200 },
    Endpoint { method: "put", path: "/api/v1/budgets/{subject}", summary: "Set the ε limit of researcher:<id>, dataset:<id> or global (a ledger entry; limits never un-spend). Lowering applies at once; raising waits for t members (GET /api/v1/changes/pending). The researcher must be registered (404) and the dataset the federation's (422 unknown_dataset).", roles: A, body: Some("BudgetLimit"), params: &[], headers: &[], ok: 200 },
    Endpoint { method: "get", path: "/api/v1/committee", summary: "The committee: members, endpoints, replication, leader, ledger head, latest cosigned checkpoint, key fingerprint.", roles: STAFF, body: None, params: &[], headers: &[], ok: 200 },
    Endpoint { method: "get", path: "/api/v1/committee/config", summary: "The committee as applied on the ledger, encoded (medtech.ledger.v1.Committee, hex), with its origin and epoch: what `medtech committee propose` edits.", roles: STAFF, body: None, params: &[], headers: &[], ok: 200 },
    Endpoint { method: "post", path: "/api/v1/committee/changes", summary: "Propose a committee change (a `medtech committee` change file): the next committee with the approvals of at least t current members. Checked against the applied committee (409 refused_by_ledger with the reason) and again by the ledger.", roles: A, body: Some("CommitteeChange"), params: &[], headers: &[], ok: 200 },
    Endpoint { method: "get", path: "/api/v1/changes/pending", summary: "Changes to privacy limits waiting for t members (a researcher registered, a limit raised, a researcher re-enabled): each with its id, who approved it, who has not, how many approvals it still needs, and when its approvals lapse (lapses_at_ms, committee time: 7 days after t members have posted since it was proposed; null until then).", roles: STAFF, body: None, params: &[], headers: &[], ok: 200 },
    Endpoint { method: "post", path: "/api/v1/changes/{id}/approve", summary: "Approve a pending change as this member (it posts the identical change, signed by this member); the t-th approval applies it. 404 if no such change is pending.", roles: A, body: None, params: &[], headers: &[], ok: 200 },
    Endpoint { method: "post", path: "/api/v1/devices", summary: "Upload devices to this hospital's store (JSON array, NDJSON, CSV, or protobuf DeviceBatch by Content-Type). Valid records are stored (same UDI: updated), invalid ones reported one by one; an unreadable upload changes nothing. Only this member's own operators (403 not_this_hospital) and only records of this hospital (others refused one by one). UDIs are trimmed and upper-cased, whatever the format.", roles: O, body: Some("DeviceUpload"), params: &[], headers: &[], ok: 200 },
    Endpoint { method: "get", path: "/api/v1/devices/stats", summary: "How many devices this hospital holds.", roles: &["admin", "operator"], body: None, params: &[], headers: &[], ok: 200 },
    Endpoint { method: "get", path: "/api/v1/ledger/head", summary: "Size and Merkle root of this member's applied ledger.", roles: ALL, body: None, params: &[], headers: &[], ok: 200 },
    Endpoint { method: "get", path: "/api/v1/ledger/entries", summary: "Ledger entries with their signed bytes and leaf hashes, in log order. With kind, the filter applies before the limit: a page holds limit entries of that kind unless it read to the ledger's end or 10,000 entries; next is where the following page starts (pass it as from; null once the end was read).", roles: AA, body: None, params: &[("from", "first sequence number (default 0)"), ("limit", "at most this many (default 100, max 1000)"), ("kind", "only entries of this kind (e.g. submit_query, misbehaviour)")], headers: &[], ok: 200 },
    Endpoint { method: "get", path: "/api/v1/ledger/entries/{seq}/proof", summary: "RFC 6962 inclusion proof of an entry in the tree of a given size.", roles: AA, body: None, params: &[("size", "tree size (default: current)")], headers: &[], ok: 200 },
    Endpoint { method: "get", path: "/api/v1/ledger/consistency", summary: "RFC 6962 consistency proof between two tree sizes.", roles: AA, body: None, params: &[("old", "older tree size (required)"), ("new", "newer tree size (default: current)")], headers: &[], ok: 200 },
    Endpoint { method: "get", path: "/api/v1/ledger/checkpoint", summary: "The latest checkpoint cosigned by t members, as a C2SP signed note.", roles: ALL, body: None, params: &[], headers: &[], ok: 200 },
    Endpoint { method: "get", path: "/api/v1/ledger/export", summary: "The whole ledger as one file for offline verification (`medtech ledger verify`).", roles: AA, body: None, params: &[], headers: &[], ok: 200 },
    Endpoint { method: "post", path: "/api/v1/ledger/verify", summary: "Run the offline verifier over this member's export and return its report.", roles: AA, body: None, params: &[], headers: &[], ok: 200 },
];

fn schemas() -> Value {
    let s = |props: Value, required: &[&str]| json!({ "type": "object", "additionalProperties": false, "properties": props, "required": required });
    json!({
        "Error": {
            "type": "object",
            "description": "RFC 9457 problem details (media type application/problem+json), with extension members.",
            "additionalProperties": true,
            "required": ["type", "title", "status", "detail", "code"],
            "properties": {
                "type": { "type": "string", "format": "uri", "description": "tag:medtech-chain,2026:problem:<code>: identifies the problem (not a page to fetch)." },
                "title": { "type": "string", "description": "The HTTP status's reason phrase." },
                "status": { "type": "integer", "minimum": 400, "maximum": 599 },
                "detail": { "type": "string", "description": "For people." },
                "code": { "type": "string", "description": "Stable, machine-readable (extension member)." },
                "min_epsilon": { "type": "number", "description": "With epsilon_below_floor only: the smallest ε accepted for the refused query's kind and target." },
                "error": { "type": "object", "description": "Deprecated: code, message and any detail in the shape of earlier versions.", "properties": {
                    "code": { "type": "string" }, "message": { "type": "string" } } } } },
        "Login": s(json!({ "username": { "type": "string" }, "password": { "type": "string", "format": "password" } }), &["username", "password"]),
        "ChangePassword": s(json!({ "old_password": { "type": "string", "format": "password" }, "new_password": { "type": "string", "format": "password", "minLength": 12 } }), &["old_password", "new_password"]),
        "Filter": s(json!({
            "field": { "type": "string", "description": "A field of DeviceData (see /api/v1/interface)." },
            "op": { "type": "string", "enum": ["equals", "contains", "starts_with", "ends_with", "greater_than", "less_than", "greater_than_or_equal", "less_than_or_equal", "before", "after"] },
            "value": { "description": "String, integer, boolean, timestamp (Unix seconds or RFC 3339) or enum name." } }), &["field", "op", "value"]),
        "QuerySpec": s(json!({
            "kind": { "type": "string", "enum": ["count", "grouped_count", "average"] },
            "target": { "type": "string", "description": "Grouping field, averaged field, or (count) optional." },
            "filters": { "type": "array", "items": { "$ref": "#/components/schemas/Filter" } },
            "start_time": { "description": "Inclusive start of last_sync_time (Unix seconds or RFC 3339)." },
            "end_time": { "description": "Exclusive end of last_sync_time." },
            "epsilon": { "type": "number", "exclusiveMinimum": 0, "description": "Privacy cost of this query (pure ε)." } }), &["kind", "epsilon"]),
        "CommitteeChange": s(json!({
            "version": { "type": "integer", "enum": [1] },
            "origin": { "type": "string", "description": "The ledger origin the approvals are bound to." },
            "committee": { "type": "string", "description": "The next committee (epoch + 1), encoded medtech.ledger.v1.Committee, hex." },
            "approvals": { "type": "array", "items": s(json!({
                "member": { "type": "string" },
                "signature": { "type": "string", "description": "Ed25519 over the config-change domain, the origin and the committee bytes; 128 hex digits." } }), &["member", "signature"]) } }), &["version", "origin", "committee"]),
        "NewResearcher": s(json!({
            "username": { "type": "string", "pattern": "^[A-Za-z0-9._@-]{1,64}$" },
            "display_name": { "type": "string" }, "email": { "type": "string" }, "affiliation": { "type": "string" },
            "epsilon_budget": { "type": "number", "minimum": 0 },
            "public_key": { "type": "string", "description": "Ed25519 public key, 64 hex digits, if the researcher signs queries themselves." } }), &["username", "epsilon_budget"]),
        "ResearcherUpdate": s(json!({
            "enabled": { "type": "boolean" }, "epsilon_budget": { "type": "number", "minimum": 0 },
            "display_name": { "type": "string" }, "email": { "type": "string" }, "affiliation": { "type": "string" } }), &[]),
        "NewAccount": s(json!({
            "username": { "type": "string", "pattern": "^[A-Za-z0-9._@-]{1,64}$" },
            "role": { "type": "string", "enum": ["admin", "operator", "auditor"] },
            "display_name": { "type": "string" } }), &["username", "role"]),
        "BudgetLimit": s(json!({ "epsilon": { "type": "number", "minimum": 0 } }), &["epsilon"]),
        "DeviceUpload": { "description": "Device records: see docs/operations.md for the fields of DeviceData.", "type": "string", "format": "binary" },
    })
}

/// The OpenAPI document.
pub fn document() -> Value {
    let mut paths = Map::new();
    for e in ENDPOINTS {
        let mut op = Map::new();
        op.insert("summary".into(), json!(e.summary));
        op.insert(
            "operationId".into(),
            json!(format!(
                "{}_{}",
                e.method,
                e.path
                    .trim_start_matches('/')
                    .replace(['/', '{', '}', '.'], "_")
            )),
        );
        if e.roles.is_empty() {
            op.insert("security".into(), json!([]));
        } else {
            op.insert("x-roles".into(), json!(e.roles));
        }
        let mut params: Vec<Value> = e
            .path
            .split('/')
            .filter_map(|seg| seg.strip_prefix('{')?.strip_suffix('}'))
            .map(|p| json!({ "name": p, "in": "path", "required": true, "schema": { "type": "string" } }))
            .collect();
        params.extend(e.params.iter().map(|(n, d)| json!({ "name": n, "in": "query", "required": *n == "old", "description": d, "schema": param_schema(e.path, n) })));
        params.extend(e.headers.iter().map(|(n, d)| json!({ "name": n, "in": "header", "required": false, "description": d, "schema": { "type": "string", "minLength": 1, "maxLength": 255, "pattern": "^[ -~]+$" } })));
        if !params.is_empty() {
            op.insert("parameters".into(), Value::Array(params));
        }
        if let Some(b) = e.body {
            let content = if b == "DeviceUpload" {
                json!({
                    "application/json": { "schema": { "type": "array", "items": { "type": "object" } } },
                    "application/x-ndjson": { "schema": { "type": "string" } },
                    "text/csv": { "schema": { "type": "string" } },
                    "application/x-protobuf": { "schema": { "type": "string", "format": "binary" } },
                })
            } else {
                json!({ "application/json": { "schema": { "$ref": format!("#/components/schemas/{b}") } } })
            };
            op.insert(
                "requestBody".into(),
                json!({ "required": true, "content": content }),
            );
        }
        let err = json!({ "description": "Error", "content": { (super::PROBLEM_JSON): { "schema": { "$ref": "#/components/schemas/Error" } } } });
        let mut responses = Map::new();
        responses.insert(e.ok.to_string(), json!({ "description": "Success" }));
        responses.insert("4XX".into(), err.clone());
        responses.insert("5XX".into(), err);
        op.insert("responses".into(), Value::Object(responses));
        let entry = paths
            .entry(e.path.to_owned())
            .or_insert_with(|| Value::Object(Map::new()));
        if let Value::Object(m) = entry {
            m.insert(e.method.to_owned(), Value::Object(op));
        }
    }
    json!({
        // 3.1: its schemas are JSON Schema 2020-12 (numeric exclusiveMinimum, as ε uses).
        "openapi": "3.1.0",
        "info": {
            "title": "MedTech Chain committee node API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Served by every committee member. Tokens from POST /api/v1/login are accepted by every member. Errors are RFC 9457 problem details (application/problem+json: type, title, status, detail, and the stable code). Bodies are limited to 1 MiB (device uploads: the node's max_upload_bytes); requests are rate-limited per user (429 with Retry-After). Every response carries X-Request-Id (yours if you send a token of 1-64 letters, digits, '.', '_' or '-'); a request taking longer than the node's request timeout (default 120 s) is answered 503 request_timeout.",
            "license": { "name": "MIT" },
        },
        "components": {
            "securitySchemes": { "bearer": { "type": "http", "scheme": "bearer", "bearerFormat": "mt1 (Ed25519-signed claims)" } },
            "schemas": schemas(),
        },
        "security": [{ "bearer": [] }],
        "paths": paths,
    })
}

/// The schema of query parameter `name` of `path`: the type and range the handler parses
/// (`handlers::num` refuses a non-number with 400 `invalid_parameter`), so that generated
/// clients send what is accepted.
fn param_schema(path: &str, name: &str) -> Value {
    match name {
        // GET /queries takes 0 (an empty page with the total); the ledger pages at least 1.
        "limit" if path == "/api/v1/ledger/entries" => {
            json!({ "type": "integer", "minimum": 1, "maximum": 1000, "default": 100 })
        }
        "limit" => json!({ "type": "integer", "minimum": 0, "maximum": 1000, "default": 100 }),
        "wait" => json!({ "type": "integer", "minimum": 0, "maximum": 60, "default": 0 }),
        "from" => json!({ "type": "integer", "minimum": 0, "default": 0 }),
        "before" => json!({ "type": "integer", "minimum": 0 }),
        "size" | "old" | "new" => json!({ "type": "integer", "minimum": 0 }),
        "status" => json!({ "type": "string", "enum": ["pending", "released", "failed"] }),
        "format" => json!({ "type": "string", "enum": ["json", "csv"], "default": "json" }),
        _ => json!({ "type": "string" }),
    }
}

/// The document as `docs/openapi.json` holds it.
pub fn json_text() -> String {
    // Serialising a `Value` cannot fail.
    serde_json::to_string_pretty(&document()).unwrap_or_default() + "\n"
}

/// `docs/api.md`, generated from the same table.
pub fn markdown() -> String {
    let mut s = String::from(
        "# The committee node's HTTP API\n\n\
         Generated from the OpenAPI document (`docs/openapi.json`, also served at\n\
         `/api/v1/openapi.json`) by `medtech api-docs --out docs`; do not edit by hand.\n\n\
         Every member serves the same API. Sign in with `POST /api/v1/login`; send the token as\n\
         `Authorization: Bearer <token>` to any member. Tokens live 15 minutes by default.\n\
         Errors are RFC 9457 problem details (`application/problem+json`): `type`\n\
         (`tag:medtech-chain,2026:problem:<code>`), `title`, `status`, `detail`, the stable `code`\n\
         and details such as `min_epsilon`; the earlier `{\"error\": {\"code\", \"message\"}}` object is\n\
         still included (deprecated). Request\n\
         bodies are limited to 1 MiB (device uploads: the node's `max_upload_bytes`); each user\n\
         is rate-limited (429 with `Retry-After`), logins per client address, per address and\n\
         username, and for everyone. A generated password must be changed before anything else.\n\
         Every response carries `X-Request-Id` (yours if you send a token of 1–64 letters, digits,\n\
         `.`, `_` or `-`); a request taking longer than the node's request timeout (default 120 s)\n\
         is answered 503 `request_timeout`.\n\n\
         | Method | Path | Who | What |\n|---|---|---|---|\n",
    );
    for e in ENDPOINTS {
        let who = if e.roles.is_empty() {
            "anyone".to_owned()
        } else {
            e.roles.join(", ")
        };
        s.push_str(&format!(
            "| {} | `{}` | {} | {} |\n",
            e.method.to_uppercase(),
            e.path,
            who,
            e.summary
        ));
    }
    s.push_str("\n## Parameters and bodies\n\n");
    for e in ENDPOINTS
        .iter()
        .filter(|e| e.body.is_some() || !e.params.is_empty() || !e.headers.is_empty())
    {
        s.push_str(&format!("### {} `{}`\n\n", e.method.to_uppercase(), e.path));
        if let Some(b) = e.body {
            s.push_str(&format!(
                "Body: `{b}` (see `components.schemas.{b}` in `openapi.json`).\n\n"
            ));
        }
        for (n, d) in e.params {
            s.push_str(&format!("- `{n}`: {d}\n"));
        }
        for (n, d) in e.headers {
            s.push_str(&format!("- header `{n}`: {d}\n"));
        }
        if !e.params.is_empty() || !e.headers.is_empty() {
            s.push('\n');
        }
    }
    s.push_str(
        "## Example\n\n```sh\n\
         TOKEN=$(curl -s -X POST localhost:8080/api/v1/login -H 'content-type: application/json' \\\n  \
         -d '{\"username\":\"researcher\",\"password\":\"…\"}' | jq -r .token)\n\
         KEY=$(cat /proc/sys/kernel/random/uuid)  # reuse it only to retry this query\n\
         curl -s -X POST localhost:8080/api/v1/queries -H \"authorization: Bearer $TOKEN\" \\\n  \
         -H \"idempotency-key: $KEY\" -H 'content-type: application/json' \\\n  \
         -d '{\"kind\":\"grouped_count\",\"target\":\"speciality\",\"filters\":[{\"field\":\"device_type\",\"op\":\"equals\",\"value\":\"Pacemaker\"}],\"epsilon\":0.5}'\n\
         curl -s \"localhost:8080/api/v1/queries/q-…?wait=30\" -H \"authorization: Bearer $TOKEN\"\n```\n",
    );
    s
}
