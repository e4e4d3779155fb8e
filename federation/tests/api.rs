//! The HTTP API end to end: a 3-member committee over the replicated ledger (512-bit dealer
//! key, noise disabled so answers are exact), two members serving the API on loopback, and
//! every request made over a socket as a researcher's tools would.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::time::Duration;

use medtech_federation::api::accounts::{Account, Accounts};
use medtech_federation::api::auth::Role;
use medtech_federation::api::client::{self, Reply};
use medtech_federation::api::{ApiConfig, ApiServer};
use medtech_federation::data::generate::devices;
use medtech_federation::data::ingest::to_csv;
use medtech_federation::data::Columns;
use medtech_federation::node::LocalFederation;
use medtech_federation::protocol::{NoiseMode, Timeouts};
use medtech_federation::query::{Compiled, QuerySpec};
use medtech_threshold::dealer;
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use serde_json::{json, Value};

const ADMIN_PW: &str = "admin password for tests";
const OP_PW: &str = "operator password for tests";
const AUDIT_PW: &str = "auditor password for tests";

fn account(username: &str, role: Role) -> Account {
    Account::new(username, role)
}

struct World {
    fed: LocalFederation,
    servers: Vec<ApiServer>,
    reference: Columns,
    _dir: tempfile::TempDir,
}

impl World {
    fn addr(&self, i: usize) -> SocketAddr {
        self.servers[i].addr
    }

    async fn stop(self) {
        for s in self.servers {
            s.shutdown().await;
        }
        self.fed.shutdown().await.unwrap();
    }
}

async fn world(config: ApiConfig) -> World {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = ChaCha20Rng::seed_from_u64(7);
    let (key, shares) = dealer::generate(512, 3, 2, &mut rng).unwrap();
    let fed = LocalFederation::start(
        dir.path(),
        key,
        shares,
        NoiseMode::DisabledForTests,
        Timeouts::default(),
    )
    .await
    .unwrap();
    let mut all = Vec::new();
    for (i, store) in fed.stores.iter().enumerate() {
        let ds = devices(&fed.view.members[i], 0, 300, 50 + i as u64);
        store.write().unwrap().write(&ds, |_, _| {}).unwrap();
        all.extend(ds);
    }
    // The dataset budget is set once for the federation (by member 0).
    fed.register("seed-researcher", 0.0, 100.0).await.unwrap();
    let mut servers = Vec::new();
    for i in 0..2 {
        let accounts = Accounts::in_memory().unwrap();
        accounts
            .create(account("admin", Role::Admin), ADMIN_PW, false)
            .unwrap();
        accounts
            .create(account("operator", Role::Operator), OP_PW, false)
            .unwrap();
        accounts
            .create(account("auditor", Role::Auditor), AUDIT_PW, false)
            .unwrap();
        let state = fed.api_state(i, accounts, config.clone()).unwrap();
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        servers.push(ApiServer::spawn(std::sync::Arc::new(state), l).unwrap());
    }
    World {
        fed,
        servers,
        reference: Columns::from_devices(&all),
        _dir: dir,
    }
}

async fn call(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Value,
) -> Reply {
    client::json(addr, method, path, token, &body)
        .await
        .unwrap()
}

fn code(r: &Reply) -> String {
    r.json()["error"]["code"].as_str().unwrap_or("").to_owned()
}

/// Registers `name` through the admin API of member `via` and returns their password.
async fn register(w: &World, via: usize, admin: &str, name: &str, budget: f64) -> String {
    let r = call(
        w.addr(via),
        "POST",
        "/api/v1/researchers",
        Some(admin),
        json!({ "username": name, "display_name": "Dr. Test", "epsilon_budget": budget }),
    )
    .await;
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    let pw = r.json()["password"].as_str().unwrap().to_owned();
    // The world serves the API of members 0 and 1: the other one approves.
    approve_pending(w, if via == 0 { 1 } else { 0 }).await;
    pw
}

/// One admin alone only proposes what loosens a privacy limit: the registration and the
/// first budget are pending, naming who approved and that one approval is missing (t = 2);
/// the admin of member `other` approves them through the API, and they apply.
async fn approve_pending(w: &World, other: usize) {
    let admin = client::login(w.addr(other), "admin", ADMIN_PW)
        .await
        .unwrap();
    let pending = call(
        w.addr(other),
        "GET",
        "/api/v1/changes/pending",
        Some(&admin),
        Value::Null,
    )
    .await
    .json();
    let list = pending["pending"].as_array().unwrap().clone();
    assert!(!list.is_empty(), "nothing pending: {pending}");
    for p in &list {
        assert_eq!(p["missing"], 1, "{p}");
        assert_eq!(p["approved_by"].as_array().unwrap().len(), 1, "{p}");
        let id = p["id"].as_str().unwrap();
        let r = call(
            w.addr(other),
            "POST",
            &format!("/api/v1/changes/{id}/approve"),
            Some(&admin),
            Value::Null,
        )
        .await;
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        assert_eq!(r.json()["applied"], true, "{}", r.json());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn researcher_registers_queries_and_reads_exact_results_through_any_member() {
    let w = world(ApiConfig::default()).await;
    let admin = client::login(w.addr(0), "admin", ADMIN_PW).await.unwrap();
    let pw = register(&w, 0, &admin, "alice", 3.0).await;

    // Alice signs in at member 0 and must change her generated password.
    let r = call(
        w.addr(0),
        "POST",
        "/api/v1/login",
        None,
        json!({ "username": "alice", "password": pw }),
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["must_change_password"], true);
    let token = r.json()["token"].as_str().unwrap().to_owned();
    let r = call(
        w.addr(0),
        "POST",
        "/api/v1/password",
        Some(&token),
        json!({ "old_password": pw, "new_password": "alice's own long password" }),
    )
    .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let token = client::login(w.addr(0), "alice", "alice's own long password")
        .await
        .unwrap();

    // The interface lists what the builder offers.
    let i = call(
        w.addr(0),
        "GET",
        "/api/v1/interface",
        Some(&token),
        Value::Null,
    )
    .await
    .json();
    assert_eq!(i["bins"]["speciality"].as_array().unwrap().len(), 56);
    assert_eq!(i["fields"]["usage_hours"], "integer");
    assert_eq!(i["fields"]["last_sync_time"], "timestamp");

    // A grouped count with two filters, submitted at member 1 with member 0's token.
    let spec = json!({
        "kind": "grouped_count",
        "target": "speciality",
        "filters": [
            { "field": "device_type", "op": "equals", "value": "Pacemaker" },
            { "field": "usage_hours", "op": "greater_than", "value": 1000 }
        ],
        "epsilon": 1.0
    });
    let r = call(
        w.addr(1),
        "POST",
        "/api/v1/queries",
        Some(&token),
        spec.clone(),
    )
    .await;
    assert_eq!(r.status, 202, "{}", String::from_utf8_lossy(&r.body));
    let id = r.json()["id"].as_str().unwrap().to_owned();
    assert_eq!(
        r.header("location"),
        Some(format!("/api/v1/queries/{id}").as_str())
    );

    let r = call(
        w.addr(0),
        "GET",
        &format!("/api/v1/queries/{id}?wait=60"),
        Some(&token),
        Value::Null,
    )
    .await;
    let q = r.json();
    assert_eq!(q["status"], "released", "{q}");
    let values: Vec<i128> = q["result"]["result"]["GroupedCount"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["value"].as_i64().unwrap() as i128)
        .collect();
    let expected = Compiled::new(
        serde_json::from_value::<QuerySpec>(spec).unwrap(),
        &w.fed.view.platform,
        w.fed.view.n(),
        w.fed.view.threshold,
    )
    .unwrap()
    .evaluate(&w.reference);
    assert_eq!(values, expected, "noise is disabled: the answer is exact");
    // Issue 28 §3: the same release flattened for tools, one row per bin.
    let table = &q["table"];
    let flat: Vec<i128> = table["values"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_i64().unwrap() as i128)
        .collect();
    assert_eq!(flat, values, "{table}");
    assert_eq!(table["labels"].as_array().unwrap().len(), values.len());
    assert_eq!(table["labels"][1], "ALLERGY_AND_IMMUNOLOGY", "{table}");
    for (row, v) in table["intervals"].as_array().unwrap().iter().zip(&values) {
        let (lo, hi) = (
            row[0].as_i64().unwrap() as i128,
            row[1].as_i64().unwrap() as i128,
        );
        assert!(lo <= *v && *v <= hi, "{row} around {v}");
    }
    assert_eq!(table["confidence"], 0.95);
    assert_eq!(q["result"]["contributors"].as_array().unwrap().len(), 3);

    // History and budget.
    let h = call(
        w.addr(1),
        "GET",
        "/api/v1/queries",
        Some(&token),
        Value::Null,
    )
    .await
    .json();
    assert_eq!(h["total"], 1);
    let b = call(
        w.addr(0),
        "GET",
        "/api/v1/budget",
        Some(&token),
        Value::Null,
    )
    .await
    .json();
    assert_eq!(b["researcher"]["epsilon_spent"], 1.0);
    assert_eq!(b["researcher"]["epsilon_remaining"], 2.0);

    // An average answers in the field's unit.
    let r = call(
        w.addr(0),
        "POST",
        "/api/v1/queries",
        Some(&token),
        json!({ "kind": "average", "target": "usage_hours", "epsilon": 1.0 }),
    )
    .await;
    assert_eq!(r.status, 202);
    let id2 = r.json()["id"].as_str().unwrap().to_owned();
    let q = call(
        w.addr(0),
        "GET",
        &format!("/api/v1/queries/{id2}?wait=60"),
        Some(&token),
        Value::Null,
    )
    .await
    .json();
    assert_eq!(q["status"], "released", "{q}");
    assert_eq!(q["unit"], "hours");
    assert!(q["result"]["average"].as_f64().unwrap() > 0.0);

    // Over budget: 1 ε left, 2 asked.
    let r = call(
        w.addr(0),
        "POST",
        "/api/v1/queries",
        Some(&token),
        json!({ "kind": "count", "epsilon": 2.0 }),
    )
    .await;
    assert_eq!(r.status, 403, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(code(&r), "budget_exceeded");

    // A query outside the interface is refused before the ledger sees it.
    let r = call(w.addr(0), "POST", "/api/v1/queries", Some(&token),
        json!({ "kind": "count", "filters": [{ "field": "udi", "op": "equals", "value": "x" }], "epsilon": 0.1 })).await;
    assert_eq!(r.status, 422);
    assert_eq!(code(&r), "invalid_query");

    // Another researcher cannot see Alice's query.
    // Registered by member 1's own admin (accounts are managed where they live).
    let admin1 = client::login(w.addr(1), "admin", ADMIN_PW).await.unwrap();
    let pw_bob = register(&w, 1, &admin1, "bob", 1.0).await;
    let bob = client::first_login(w.addr(1), "bob", &pw_bob, "bob's own long password")
        .await
        .unwrap();
    let r = call(
        w.addr(0),
        "GET",
        &format!("/api/v1/queries/{id}"),
        Some(&bob),
        Value::Null,
    )
    .await;
    assert_eq!(r.status, 404);

    // The admin's CSV export holds both of Alice's queries.
    let r = client::request(
        w.addr(0),
        "GET",
        "/api/v1/queries/export?format=csv&researcher=alice",
        Some(&admin),
        None,
        b"",
    )
    .await
    .unwrap();
    assert_eq!(r.status, 200);
    let text = String::from_utf8(r.body).unwrap();
    assert_eq!(text.lines().count(), 3, "{text}");
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roles_tokens_and_disabling_are_enforced_at_every_member() {
    let w = world(ApiConfig::default()).await;
    let admin = client::login(w.addr(0), "admin", ADMIN_PW).await.unwrap();
    let pw = register(&w, 0, &admin, "carol", 2.0).await;
    let carol = client::first_login(w.addr(0), "carol", &pw, "carol's own long password")
        .await
        .unwrap();

    // No token, a garbage token, a tampered token: 401.
    let r = call(w.addr(0), "GET", "/api/v1/interface", None, Value::Null).await;
    assert_eq!((r.status, code(&r).as_str()), (401, "unauthenticated"));
    let r = call(
        w.addr(0),
        "GET",
        "/api/v1/interface",
        Some("mt1.garbage.token"),
        Value::Null,
    )
    .await;
    assert_eq!((r.status, code(&r).as_str()), (401, "invalid_token"));
    let mut parts: Vec<String> = carol.split('.').map(str::to_owned).collect();
    let claims = String::from_utf8(
        base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, &parts[1])
            .unwrap(),
    )
    .unwrap();
    let forged = claims.replace("\"researcher\"", "\"admin\"");
    parts[1] = base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, forged);
    let r = call(
        w.addr(1),
        "GET",
        "/api/v1/researchers",
        Some(&parts.join(".")),
        Value::Null,
    )
    .await;
    assert_eq!(
        (r.status, code(&r).as_str()),
        (401, "invalid_token"),
        "a researcher promoted to admin by editing the token"
    );

    // A researcher's token on admin endpoints: 403, at both members, and nothing registered.
    for i in 0..2 {
        let r = call(
            w.addr(i),
            "POST",
            "/api/v1/researchers",
            Some(&carol),
            json!({ "username": "mallory", "epsilon_budget": 100.0 }),
        )
        .await;
        assert_eq!((r.status, code(&r).as_str()), (403, "forbidden"));
        let r = call(
            w.addr(i),
            "PUT",
            "/api/v1/budgets/researcher:carol",
            Some(&carol),
            json!({ "epsilon": 100.0 }),
        )
        .await;
        assert_eq!(r.status, 403);
        let r = call(
            w.addr(i),
            "GET",
            "/api/v1/ledger/entries",
            Some(&carol),
            Value::Null,
        )
        .await;
        assert_eq!(r.status, 403);
    }
    let list = call(
        w.addr(1),
        "GET",
        "/api/v1/researchers",
        Some(&admin),
        Value::Null,
    )
    .await
    .json();
    let names: Vec<&str> = list["researchers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["username"].as_str().unwrap())
        .collect();
    assert!(!names.contains(&"mallory"), "{names:?}");

    // Login failures: same answer for a wrong password and an unknown user; then rate-limited.
    let a = call(
        w.addr(0),
        "POST",
        "/api/v1/login",
        None,
        json!({ "username": "carol", "password": "wrong password!!" }),
    )
    .await;
    let b = call(
        w.addr(0),
        "POST",
        "/api/v1/login",
        None,
        json!({ "username": "nobody", "password": "wrong password!!" }),
    )
    .await;
    assert_eq!((a.status, a.json()), (b.status, b.json()));
    let mut limited = false;
    for _ in 0..12 {
        let r = call(
            w.addr(0),
            "POST",
            "/api/v1/login",
            None,
            json!({ "username": "carol", "password": "wrong password!!" }),
        )
        .await;
        if r.status == 429 {
            assert!(r.header("retry-after").is_some());
            limited = true;
            break;
        }
    }
    assert!(limited, "repeated failed logins are rate-limited");

    // Disabling on the ledger locks Carol's existing token out at every member.
    let r = call(
        w.addr(1),
        "GET",
        "/api/v1/budget",
        Some(&carol),
        Value::Null,
    )
    .await;
    assert_eq!(r.status, 200);
    let r = call(
        w.addr(0),
        "PATCH",
        "/api/v1/researchers/carol",
        Some(&admin),
        json!({ "enabled": false }),
    )
    .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    for i in 0..2 {
        let mut status = 0;
        for _ in 0..40 {
            status = call(
                w.addr(i),
                "GET",
                "/api/v1/budget",
                Some(&carol),
                Value::Null,
            )
            .await
            .status;
            if status == 401 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(
            status, 401,
            "member {i} still accepts a disabled researcher"
        );
    }

    // Malformed JSON, unknown fields, wrong methods, unknown paths: uniform JSON errors.
    let r = client::request(
        w.addr(0),
        "POST",
        "/api/v1/researchers",
        Some(&admin),
        Some("application/json"),
        b"{not json",
    )
    .await
    .unwrap();
    assert_eq!((r.status, code(&r).as_str()), (400, "invalid_json"));
    let r = call(
        w.addr(0),
        "POST",
        "/api/v1/researchers",
        Some(&admin),
        json!({ "username": "x", "epsilon_budget": 1, "role": "admin" }),
    )
    .await;
    assert_eq!((r.status, code(&r).as_str()), (400, "invalid_json"));
    let r = call(
        w.addr(0),
        "DELETE",
        "/api/v1/interface",
        Some(&admin),
        Value::Null,
    )
    .await;
    assert_eq!((r.status, code(&r).as_str()), (405, "method_not_allowed"));
    let r = call(
        w.addr(0),
        "GET",
        "/api/v1/nothing",
        Some(&admin),
        Value::Null,
    )
    .await;
    assert_eq!((r.status, code(&r).as_str()), (404, "not_found"));
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operators_upload_devices_and_bad_uploads_change_nothing() {
    let w = world(ApiConfig {
        max_upload_bytes: 200_000,
        ..ApiConfig::default()
    })
    .await;
    let op = client::login(w.addr(0), "operator", OP_PW).await.unwrap();
    let admin = client::login(w.addr(0), "admin", ADMIN_PW).await.unwrap();
    let at = w.addr(0);
    let count = |t: String| async move {
        call(at, "GET", "/api/v1/devices/stats", Some(&t), Value::Null)
            .await
            .json()["devices"]
            .as_u64()
            .unwrap()
    };
    let before = count(op.clone()).await;
    assert_eq!(before, 300);

    // CSV of 100 new devices and 10 with UDIs already held: 100 inserted, 10 updated.
    let mut ds = devices(&w.fed.view.members[0], 1000, 100, 99);
    ds.extend(devices(&w.fed.view.members[0], 0, 10, 98));
    let csv = to_csv(&ds).unwrap();
    let r = client::request(
        w.addr(0),
        "POST",
        "/api/v1/devices",
        Some(&op),
        Some("text/csv"),
        &csv,
    )
    .await
    .unwrap();
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(
        (r.json()["inserted"].as_u64(), r.json()["updated"].as_u64()),
        (Some(100), Some(10))
    );
    assert_eq!(count(op.clone()).await, 400);

    // One bad record among good ones: reported with its number, the rest stored.
    let good = serde_json::to_value(devices(&w.fed.view.members[0], 5000, 2, 97)).unwrap();
    let mut arr = good.as_array().unwrap().clone();
    let mut bad = arr[0].clone();
    bad["udi"] = json!("BAD-1");
    bad["battery_level"] = json!(250);
    arr.insert(1, bad);
    let r = call(
        w.addr(0),
        "POST",
        "/api/v1/devices",
        Some(&op),
        Value::Array(arr),
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["inserted"], 2);
    assert_eq!(r.json()["errors"][0]["record"], 2);
    assert_eq!(count(op.clone()).await, 402);

    // Garbage of each format, a wrong type, an oversized body: 4xx, nothing stored.
    for (ct, body, status) in [
        ("application/json", b"[{\"udi\": ".to_vec(), 400),
        ("application/x-ndjson", b"\x00\x01\x02".to_vec(), 422),
        ("text/csv", b"not,a,device,header\n1,2,3,4\n".to_vec(), 422),
        ("application/x-protobuf", vec![0xff; 64], 400),
        ("image/png", b"PNG".to_vec(), 415),
        ("text/csv", vec![b'a'; 300_000], 413),
    ] {
        let r = client::request(
            w.addr(0),
            "POST",
            "/api/v1/devices",
            Some(&op),
            Some(ct),
            &body,
        )
        .await
        .unwrap();
        assert_eq!(
            r.status,
            status,
            "{ct}: {}",
            String::from_utf8_lossy(&r.body)
        );
        assert!(r.json()["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()));
    }
    assert_eq!(
        count(op.clone()).await,
        402,
        "bad uploads changed the store"
    );

    // Only operators upload.
    let r = client::request(
        w.addr(0),
        "POST",
        "/api/v1/devices",
        Some(&admin),
        Some("text/csv"),
        &csv,
    )
    .await
    .unwrap();
    assert_eq!(r.status, 403);
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auditors_read_the_ledger_with_proofs_and_the_verifier_passes() {
    let w = world(ApiConfig::default()).await;
    let aud = client::login(w.addr(1), "auditor", AUDIT_PW).await.unwrap();
    let head = call(
        w.addr(1),
        "GET",
        "/api/v1/ledger/head",
        Some(&aud),
        Value::Null,
    )
    .await
    .json();
    let size = head["size"].as_u64().unwrap();
    assert!(size >= 3, "{head}");
    let e = call(
        w.addr(1),
        "GET",
        "/api/v1/ledger/entries?from=0&limit=10&kind=set_budget",
        Some(&aud),
        Value::Null,
    )
    .await
    .json();
    let entries = e["entries"].as_array().unwrap();
    assert!(!entries.is_empty());
    assert!(entries.iter().all(|x| x["kind"] == "set_budget"));
    let seq = entries[0]["sequence"].as_u64().unwrap();
    let p = call(
        w.addr(1),
        "GET",
        &format!("/api/v1/ledger/entries/{seq}/proof?size={size}"),
        Some(&aud),
        Value::Null,
    )
    .await
    .json();
    let proof: Vec<[u8; 32]> = p["proof"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| {
            hex::decode(h.as_str().unwrap())
                .unwrap()
                .try_into()
                .unwrap()
        })
        .collect();
    let leaf: [u8; 32] = hex::decode(entries[0]["leaf_hash"].as_str().unwrap())
        .unwrap()
        .try_into()
        .unwrap();
    let root: [u8; 32] = hex::decode(p["root"].as_str().unwrap())
        .unwrap()
        .try_into()
        .unwrap();
    medtech_ledger::merkle::verify_inclusion(&leaf, seq, size, &proof, &root).unwrap();
    let r = call(
        w.addr(1),
        "GET",
        &format!("/api/v1/ledger/entries/{size}/proof"),
        Some(&aud),
        Value::Null,
    )
    .await;
    assert_eq!(r.status, 404);
    let c = call(
        w.addr(1),
        "GET",
        &format!("/api/v1/ledger/consistency?old=1&new={size}"),
        Some(&aud),
        Value::Null,
    )
    .await;
    assert_eq!(c.status, 200);
    let v = call(
        w.addr(1),
        "POST",
        "/api/v1/ledger/verify",
        Some(&aud),
        Value::Null,
    )
    .await
    .json();
    assert_eq!(v["passed"], true, "{v}");
    let r = call(
        w.addr(1),
        "GET",
        "/api/v1/ledger/consistency?old=x",
        Some(&aud),
        Value::Null,
    )
    .await;
    assert_eq!((r.status, code(&r).as_str()), (400, "invalid_parameter"));

    // /metrics needs a token (an auditor's is not enough) and then counts what happened.
    let r = call(w.addr(1), "GET", "/metrics", None, Value::Null).await;
    assert_eq!(r.status, 401);
    let r = call(w.addr(1), "GET", "/metrics", Some(&aud), Value::Null).await;
    assert_eq!(r.status, 403);
    let admin = client::login(w.addr(1), "admin", ADMIN_PW).await.unwrap();
    let m = client::request(w.addr(1), "GET", "/metrics", Some(&admin), None, b"")
        .await
        .unwrap();
    let text = String::from_utf8(m.body).unwrap();
    assert!(text.contains("medtech_http_requests_total{method=\"POST\",route=\"/api/v1/ledger/verify\",status=\"200\"} 1"), "{text}");
    assert!(text.contains("medtech_devices 300"), "{text}");
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_committee_change_with_t_approvals_is_applied_and_one_with_fewer_is_refused() {
    use medtech_federation::change::{self, ChangeFile, Edit};
    let w = world(ApiConfig::default()).await;
    let admin = client::login(w.addr(0), "admin", ADMIN_PW).await.unwrap();
    let cfg = call(
        w.addr(1),
        "GET",
        "/api/v1/committee/config",
        Some(&admin),
        Value::Null,
    )
    .await
    .json();
    assert_eq!(
        (cfg["epoch"].as_u64(), cfg["threshold"].as_u64()),
        (Some(0), Some(2)),
        "{cfg}"
    );
    let current = change::decode_committee(cfg["committee"].as_str().unwrap()).unwrap();
    let origin = cfg["origin"].as_str().unwrap();
    let mut file = change::propose(origin, &current, &[Edit::Threshold(3)]).unwrap();
    let key = |i: usize| w.fed.ledger.members[i].key();
    let submit = |f: &ChangeFile| serde_json::to_value(f).unwrap();

    // One approval of the two needed: refused with the reason, nothing changes.
    change::approve(&mut file, &key(2)).unwrap();
    let r = call(
        w.addr(0),
        "POST",
        "/api/v1/committee/changes",
        Some(&admin),
        submit(&file),
    )
    .await;
    assert_eq!(
        (r.status, code(&r).as_str()),
        (409, "refused_by_ledger"),
        "{}",
        r.json()
    );
    assert!(r.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("1 approvals from current members, 2 needed"));
    // A change for another ledger, or a damaged file: a clear 400.
    let mut elsewhere = file.clone();
    elsewhere.origin = "another.example/ledger".into();
    let r = call(
        w.addr(0),
        "POST",
        "/api/v1/committee/changes",
        Some(&admin),
        submit(&elsewhere),
    )
    .await;
    assert_eq!((r.status, code(&r).as_str()), (400, "invalid_change"));
    let r = call(
        w.addr(0),
        "POST",
        "/api/v1/committee/changes",
        Some(&admin),
        json!({ "version": 1 }),
    )
    .await;
    assert_eq!((r.status, code(&r).as_str()), (400, "invalid_change"));
    // Only an admin proposes one.
    let aud = client::login(w.addr(0), "auditor", AUDIT_PW).await.unwrap();
    let r = call(
        w.addr(0),
        "POST",
        "/api/v1/committee/changes",
        Some(&aud),
        submit(&file),
    )
    .await;
    assert_eq!(r.status, 403);

    // Two approvals: applied on every member.
    change::approve(&mut file, &key(0)).unwrap();
    let r = call(
        w.addr(0),
        "POST",
        "/api/v1/committee/changes",
        Some(&admin),
        submit(&file),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.json());
    assert_eq!(r.json()["epoch"], 1);
    // Every member applies it (member 1 may apply it a moment after the leader did).
    let mut seen = Value::Null;
    for _ in 0..100 {
        seen = call(
            w.addr(1),
            "GET",
            "/api/v1/committee",
            Some(&admin),
            Value::Null,
        )
        .await
        .json();
        if seen["epoch"] == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        (seen["epoch"].as_u64(), seen["threshold"].as_u64()),
        (Some(1), Some(3)),
        "{seen}"
    );
    // The same file again is for an epoch that has passed.
    let r = call(
        w.addr(1),
        "POST",
        "/api/v1/committee/changes",
        Some(&admin),
        submit(&file),
    )
    .await;
    assert_eq!(r.status, 409);
    assert!(r.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("not the next one"));
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_documented_endpoint_exists_and_needs_the_documented_authentication() {
    let w = world(ApiConfig::default()).await;
    for e in medtech_federation::api::openapi::ENDPOINTS {
        let path = e
            .path
            .replace("{id}", "q-0")
            .replace("{seq}", "0")
            .replace("{subject}", "global");
        let r = call(
            w.addr(0),
            &e.method.to_uppercase(),
            &path,
            None,
            Value::Null,
        )
        .await;
        if e.roles.is_empty() {
            assert!(
                r.status < 500 && r.status != 404 && r.status != 405 && r.status != 401,
                "{} {path}: {}",
                e.method,
                r.status
            );
        } else {
            assert_eq!(
                r.status, 401,
                "{} {path} answered without a token",
                e.method
            );
        }
    }
    let served = call(w.addr(0), "GET", "/api/v1/openapi.json", None, Value::Null)
        .await
        .json();
    assert_eq!(served, medtech_federation::api::openapi::document());
    w.stop().await;
}

/// Signs in `name` (registered with generated password `pw`) at member `via`, changing it.
async fn sign_in(w: &World, via: usize, name: &str, pw: &str) -> String {
    client::first_login(
        w.addr(via),
        name,
        pw,
        &format!("{name}'s own long password"),
    )
    .await
    .unwrap()
}

/// A login as `username` from client `client`, through a proxy at the test's address that
/// says so in `X-Forwarded-For`.
async fn login_from(addr: SocketAddr, client: &str, username: &str, password: &str) -> Reply {
    let body = serde_json::to_vec(&json!({ "username": username, "password": password })).unwrap();
    client::request_with(
        addr,
        "POST",
        "/api/v1/login",
        None,
        Some("application/json"),
        &[("x-forwarded-for", client)],
        &body,
    )
    .await
    .unwrap()
}

fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name} in /metrics"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_flood_with_unique_usernames_is_limited_and_a_real_login_still_succeeds() {
    // The attack: logins with a fresh username each time, so that no (address, username)
    // bucket ever fills, every attempt runs an Argon2 hash of 19 MiB, all at once. The member
    // sits behind a trusted proxy (this test's loopback address) that names the client.
    let w = world(ApiConfig {
        trusted_proxies: vec!["127.0.0.1".parse().unwrap()],
        ..ApiConfig::default()
    })
    .await;
    let flood = 80;
    let mut attempts = tokio::task::JoinSet::new();
    for i in 0..flood {
        let at = w.addr(0);
        attempts.spawn(async move {
            login_from(
                at,
                "203.0.113.66",
                &format!("nobody-{i}"),
                "guess guess guess",
            )
            .await
        });
    }
    let replies = attempts.join_all().await;
    let limited = replies.iter().filter(|r| r.status == 429).count();
    let refused = replies.iter().filter(|r| r.status == 401).count();
    assert_eq!(limited + refused, flood, "only 401s and 429s");
    assert!(
        refused <= 30,
        "one client address hashed {refused} passwords at once: the flood is not limited per address"
    );

    // A real user at another address signs in, and fast.
    let t0 = std::time::Instant::now();
    let r = login_from(w.addr(0), "198.51.100.7", "admin", ADMIN_PW).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());

    // Memory: at most `max_concurrent_hashes` Argon2 hashes (19 MiB each) ran at once.
    let admin = r.json()["token"].as_str().unwrap().to_owned();
    let m = client::request(w.addr(0), "GET", "/metrics", Some(&admin), None, b"")
        .await
        .unwrap();
    let peak = metric(
        &String::from_utf8_lossy(&m.body),
        "medtech_password_hashes_peak",
    );
    assert!(
        peak >= 1.0 && peak <= ApiConfig::default().max_concurrent_hashes as f64,
        "{peak} password hashes at once"
    );
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_naming_itself_in_x_forwarded_for_is_not_believed() {
    // No trusted proxy (the default): a client that rotates X-Forwarded-For is still one
    // address, and its flood is limited.
    let w = world(ApiConfig::default()).await;
    let mut limited = 0;
    for i in 0..40 {
        let r = login_from(
            w.addr(0),
            &format!("192.0.2.{i}"),
            &format!("nobody-{i}"),
            "guess guess guess",
        )
        .await;
        limited += usize::from(r.status == 429);
    }
    assert!(
        limited >= 5,
        "{limited} of 40 spoofed-address logins limited"
    );
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_of_hospital_b_cannot_write_into_hospital_a() {
    let w = world(ApiConfig::default()).await;
    let a = w.fed.view.members[0].clone();
    let b = w.fed.view.members[1].clone();
    let op_b = client::login(w.addr(1), "operator", OP_PW).await.unwrap();
    let op_a = client::login(w.addr(0), "operator", OP_PW).await.unwrap();
    let at = w.addr(0);
    let count = |t: String| async move {
        call(at, "GET", "/api/v1/devices/stats", Some(&t), Value::Null)
            .await
            .json()["devices"]
            .as_u64()
            .unwrap()
    };
    let before = count(op_a.clone()).await;

    // Hospital b's operator token at hospital a: refused, nothing stored.
    let mine = serde_json::to_value(devices(&a, 9000, 3, 5)).unwrap();
    let r = call(
        w.addr(0),
        "POST",
        "/api/v1/devices",
        Some(&op_b),
        mine.clone(),
    )
    .await;
    assert_eq!(
        (r.status, code(&r).as_str()),
        (403, "not_this_hospital"),
        "{}",
        r.json()
    );
    assert_eq!(count(op_a.clone()).await, before);

    // Hospital a's own operator uploading records that claim hospital b: those are refused.
    let mut arr = mine.as_array().unwrap().clone();
    arr.extend(
        serde_json::to_value(devices(&b, 9100, 2, 6))
            .unwrap()
            .as_array()
            .unwrap()
            .clone(),
    );
    let r = call(
        w.addr(0),
        "POST",
        "/api/v1/devices",
        Some(&op_a),
        Value::Array(arr),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.json());
    assert_eq!(
        (r.json()["inserted"].as_u64(), r.json()["refused"].as_u64()),
        (Some(3), Some(2))
    );
    assert_eq!(r.json()["errors"][0]["record"], 4);
    assert_eq!(count(op_a.clone()).await, before + 3);
    let only_b = serde_json::to_value(devices(&b, 9200, 2, 7)).unwrap();
    let r = call(w.addr(0), "POST", "/api/v1/devices", Some(&op_a), only_b).await;
    assert_eq!(r.status, 422);
    assert_eq!(count(op_a).await, before + 3);
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_device_uploaded_as_json_and_csv_is_one_device() {
    let w = world(ApiConfig::default()).await;
    let op = client::login(w.addr(0), "operator", OP_PW).await.unwrap();
    let a = w.fed.view.members[0].clone();
    let mut d = devices(&a, 7000, 1, 3).remove(0);
    d.udi = "  gs1-0123456789-abc ".into();
    let r = call(
        w.addr(0),
        "POST",
        "/api/v1/devices",
        Some(&op),
        serde_json::to_value([&d]).unwrap(),
    )
    .await;
    assert_eq!(r.json()["inserted"], 1, "{}", r.json());
    d.udi = "GS1-0123456789-ABC".into();
    let csv = to_csv(&[d]).unwrap();
    let r = client::request(
        w.addr(0),
        "POST",
        "/api/v1/devices",
        Some(&op),
        Some("text/csv"),
        &csv,
    )
    .await
    .unwrap();
    assert_eq!(
        (r.json()["inserted"].as_u64(), r.json()["updated"].as_u64()),
        (Some(0), Some(1)),
        "the CSV record is the JSON one: {}",
        r.json()
    );
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_generated_password_allows_only_its_change_and_a_change_revokes_older_tokens() {
    let w = world(ApiConfig::default()).await;
    let admin = client::login(w.addr(0), "admin", ADMIN_PW).await.unwrap();
    let pw = register(&w, 0, &admin, "erin", 5.0).await;
    let first = client::login(w.addr(0), "erin", &pw).await.unwrap();

    // Before the change: no query, no budget read, at any member; only /me and the change.
    for i in 0..2 {
        let r = call(
            w.addr(i),
            "POST",
            "/api/v1/queries",
            Some(&first),
            json!({ "kind": "count", "epsilon": 1.0 }),
        )
        .await;
        assert_eq!(
            (r.status, code(&r).as_str()),
            (403, "password_change_required"),
            "member {i}"
        );
        let r = call(
            w.addr(i),
            "GET",
            "/api/v1/budget",
            Some(&first),
            Value::Null,
        )
        .await;
        assert_eq!(r.status, 403);
    }
    let b = call(
        w.addr(0),
        "GET",
        "/api/v1/budget",
        Some(&admin),
        Value::Null,
    )
    .await;
    assert_eq!(b.status, 403, "admins have no own budget");
    let r = call(w.addr(0), "GET", "/api/v1/me", Some(&first), Value::Null).await;
    assert_eq!(
        (r.status, r.json()["must_change_password"].clone()),
        (200, json!(true))
    );
    let r = call(
        w.addr(0),
        "POST",
        "/api/v1/password",
        Some(&first),
        json!({ "old_password": pw, "new_password": "erin's own long password" }),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.json());
    let second = r.json()["token"].as_str().unwrap().to_owned();

    // The token of the generated password no longer works; the new one does.
    let r = call(
        w.addr(0),
        "GET",
        "/api/v1/budget",
        Some(&first),
        Value::Null,
    )
    .await;
    assert_eq!((r.status, code(&r).as_str()), (401, "invalid_token"));
    let r = call(
        w.addr(0),
        "GET",
        "/api/v1/budget",
        Some(&second),
        Value::Null,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.json());

    // A stolen token stops working when its owner changes the password.
    let stolen = client::login(w.addr(0), "erin", "erin's own long password")
        .await
        .unwrap();
    let r = call(w.addr(0), "POST", "/api/v1/password", Some(&second),
        json!({ "old_password": "erin's own long password", "new_password": "erin's newer long password" })).await;
    assert_eq!(r.status, 200, "{}", r.json());
    for t in [&stolen, &second] {
        let r = call(
            w.addr(0),
            "POST",
            "/api/v1/queries",
            Some(t),
            json!({ "kind": "count", "epsilon": 1.0 }),
        )
        .await;
        assert_eq!(
            r.status,
            401,
            "a token from before the change: {}",
            r.json()
        );
    }
    let third = r.json()["token"].as_str().unwrap().to_owned();
    let r = call(
        w.addr(0),
        "GET",
        "/api/v1/budget",
        Some(&third),
        Value::Null,
    )
    .await;
    assert_eq!(r.status, 200);
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn polling_an_id_not_on_the_ledger_answers_404_at_once() {
    let w = world(ApiConfig::default()).await;
    let admin = client::login(w.addr(0), "admin", ADMIN_PW).await.unwrap();
    let pw = register(&w, 0, &admin, "frank", 5.0).await;
    let frank = sign_in(&w, 0, "frank", &pw).await;
    let t0 = std::time::Instant::now();
    let r = call(
        w.addr(1),
        "GET",
        "/api/v1/queries/q-00000000deadbeef?wait=60",
        Some(&frank),
        Value::Null,
    )
    .await;
    assert_eq!(r.status, 404);
    assert!(
        t0.elapsed() < Duration::from_secs(3),
        "404 after {:?}",
        t0.elapsed()
    );
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn budgets_for_nobody_and_patches_that_change_nothing_are_refused() {
    let w = world(ApiConfig::default()).await;
    let admin = client::login(w.addr(0), "admin", ADMIN_PW).await.unwrap();
    let admin1 = client::login(w.addr(1), "admin", ADMIN_PW).await.unwrap();
    let at = w.addr(0);
    let token = admin.clone();
    let size = || {
        let t = token.clone();
        async move {
            call(at, "GET", "/api/v1/ledger/head", Some(&t), Value::Null)
                .await
                .json()["size"]
                .as_u64()
                .unwrap()
        }
    };
    let before = size().await;
    let r = call(
        w.addr(0),
        "PUT",
        "/api/v1/budgets/researcher:ghost",
        Some(&admin),
        json!({ "epsilon": 100.0 }),
    )
    .await;
    assert_eq!(r.status, 404, "{}", r.json());
    let r = call(
        w.addr(0),
        "PUT",
        "/api/v1/budgets/dataset:elsewhere",
        Some(&admin),
        json!({ "epsilon": 100.0 }),
    )
    .await;
    assert_eq!((r.status, code(&r).as_str()), (422, "unknown_dataset"));
    assert_eq!(size().await, before, "refused budgets wrote ledger entries");

    // Registered at member 1, patched at member 0 where they have no account: refused.
    let _ = register(&w, 1, &admin1, "gina", 1.0).await;
    let r = call(
        w.addr(0),
        "PATCH",
        "/api/v1/researchers/gina",
        Some(&admin),
        json!({ "display_name": "Dr. G" }),
    )
    .await;
    assert_eq!(
        (r.status, code(&r).as_str()),
        (409, "not_local"),
        "{}",
        r.json()
    );
    let r = call(
        w.addr(1),
        "PATCH",
        "/api/v1/researchers/gina",
        Some(&admin1),
        json!({}),
    )
    .await;
    assert_eq!((r.status, code(&r).as_str()), (400, "nothing_to_change"));
    // Where the account lives, the change is made and shown.
    let r = call(
        w.addr(1),
        "PATCH",
        "/api/v1/researchers/gina",
        Some(&admin1),
        json!({ "display_name": "Dr. G", "affiliation": "Lab" }),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.json());
    assert_eq!(
        (
            r.json()["display_name"].clone(),
            r.json()["affiliation"].clone()
        ),
        (json!("Dr. G"), json!("Lab"))
    );
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_of_one_member_cannot_manage_accounts_on_another() {
    let w = world(ApiConfig::default()).await;
    let admin1 = client::login(w.addr(1), "admin", ADMIN_PW).await.unwrap();
    let r = call(
        w.addr(0),
        "POST",
        "/api/v1/accounts",
        Some(&admin1),
        json!({ "username": "evil-admin", "role": "admin" }),
    )
    .await;
    assert_eq!(
        (r.status, code(&r).as_str()),
        (403, "not_local_admin"),
        "{}",
        r.json()
    );
    let r = call(
        w.addr(0),
        "GET",
        "/api/v1/accounts",
        Some(&admin1),
        Value::Null,
    )
    .await;
    assert_eq!(r.status, 403);
    let r = call(
        w.addr(0),
        "POST",
        "/api/v1/researchers",
        Some(&admin1),
        json!({ "username": "planted", "epsilon_budget": 1.0 }),
    )
    .await;
    assert_eq!(r.status, 403);
    let admin0 = client::login(w.addr(0), "admin", ADMIN_PW).await.unwrap();
    let list = call(
        w.addr(0),
        "GET",
        "/api/v1/accounts",
        Some(&admin0),
        Value::Null,
    )
    .await
    .json();
    assert!(!list.to_string().contains("evil-admin") && !list.to_string().contains("planted"));
    // Its own member's admin still can.
    let r = call(
        w.addr(1),
        "POST",
        "/api/v1/accounts",
        Some(&admin1),
        json!({ "username": "second-admin", "role": "admin" }),
    )
    .await;
    assert_eq!(r.status, 201);
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_researcher_does_not_see_other_researchers_query_ids_in_a_bundle() {
    let w = world(ApiConfig::default()).await;
    let admin = client::login(w.addr(0), "admin", ADMIN_PW).await.unwrap();
    let pa = register(&w, 0, &admin, "hana", 50.0).await;
    let pb = register(&w, 0, &admin, "ivan", 50.0).await;
    let hana = sign_in(&w, 0, "hana", &pa).await;
    let ivan = sign_in(&w, 0, "ivan", &pb).await;
    let at = w.addr(0);
    let submit = |t: String| async move {
        let r = call(
            at,
            "POST",
            "/api/v1/queries",
            Some(&t),
            json!({ "kind": "count", "epsilon": 0.1 }),
        )
        .await;
        assert_eq!(r.status, 202, "{}", r.json());
        r.json()["id"].as_str().unwrap().to_owned()
    };
    let get = |t: String, id: String| async move {
        call(
            at,
            "GET",
            &format!("/api/v1/queries/{id}?wait=60"),
            Some(&t),
            Value::Null,
        )
        .await
        .json()
    };
    // A first query opens a bundle; the two submitted while it runs queue and share the next.
    let mut mixed = false;
    for _ in 0..5 {
        let _opener = submit(hana.clone()).await;
        let (theirs, mine) = tokio::join!(submit(ivan.clone()), submit(hana.clone()));
        let seen = get(hana.clone(), mine.clone()).await;
        assert_eq!(seen["status"], "released", "{seen}");
        let all = get(admin.clone(), mine.clone()).await;
        let full: Vec<String> =
            serde_json::from_value(all["result"]["bundle"].clone()).unwrap_or_default();
        let shown: Vec<String> =
            serde_json::from_value(seen["result"]["bundle"].clone()).unwrap_or_default();
        assert!(
            !shown.contains(&theirs),
            "hana sees ivan's query {theirs} in {shown:?}"
        );
        assert!(shown.iter().all(|id| full.contains(id)));
        if full.contains(&theirs) {
            assert!(shown.contains(&mine), "her own query stays listed");
            mixed = true;
            break;
        }
        let _ = get(ivan.clone(), theirs).await;
    }
    assert!(
        mixed,
        "no bundle held both researchers' queries: the test proved nothing"
    );
    w.stop().await;
}

#[test]
fn docs_openapi_and_api_md_are_current() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("docs");
    let json = std::fs::read_to_string(root.join("openapi.json")).unwrap_or_default();
    let md = std::fs::read_to_string(root.join("api.md")).unwrap_or_default();
    assert!(
        json == medtech_federation::api::openapi::json_text() && md == medtech_federation::api::openapi::markdown(),
        "docs/openapi.json or docs/api.md is stale: run `cargo run -p medtech-federation --bin medtech -- api-docs --out docs`"
    );
}

/// Issue 28 §3: the OpenAPI document is valid for a real validator, not only for our own
/// reading of the specification: `openapi-spec-validator` from PyPI (installed by
/// `scripts/setup.sh`). It refused the document while it declared 3.0.3 and used 3.1's numeric
/// `exclusiveMinimum` for ε.
#[test]
fn docs_openapi_is_valid_for_openapi_spec_validator() {
    let doc = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("docs")
        .join("openapi.json");
    let out = std::process::Command::new("python3")
        .args(["-m", "openapi_spec_validator"])
        .arg(&doc)
        .output()
        .expect("python3 is not installed");
    assert!(
        out.status.success(),
        "openapi-spec-validator refuses docs/openapi.json (or is missing: run `sh scripts/setup.sh`):\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: Value = serde_json::from_str(&std::fs::read_to_string(&doc).unwrap()).unwrap();
    // Query parameters carry their types: a generated client sends integers and enum values.
    let limit = &doc["paths"]["/api/v1/queries"]["get"]["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "limit")
        .unwrap()["schema"];
    assert_eq!(limit["type"], "integer", "{limit}");
}

/// Issue 24 §4: an Average of a date at ε = 10⁻⁴ has no noise-share proof bound (its sum's
/// Δ/ε is too large for 2^31 at a 2^−80 tail); the old code accepted it and silently proved
/// truncated noise under 2^31. Now it is refused before the ledger sees it: 422, naming the
/// smallest ε accepted for that target, and nothing is charged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tiny_epsilon_is_refused_with_the_floor() {
    let w = world(ApiConfig::default()).await;
    let admin = client::login(w.addr(0), "admin", ADMIN_PW).await.unwrap();
    let pw = register(&w, 0, &admin, "tina", 5.0).await;
    let tina = sign_in(&w, 0, "tina", &pw).await;
    let spent = || async {
        call(w.addr(0), "GET", "/api/v1/budget", Some(&tina), Value::Null)
            .await
            .json()["researcher"]["epsilon_spent"]
            .as_f64()
            .unwrap()
    };
    let submit = |eps: f64| {
        call(
            w.addr(0),
            "POST",
            "/api/v1/queries",
            Some(&tina),
            json!({ "kind": "average", "target": "production_date", "epsilon": eps }),
        )
    };
    for eps in [0.0001, 0.000387, 0.000001] {
        let r = submit(eps).await;
        assert_eq!(r.status, 422, "ε = {eps}: {}", r.json());
        assert_eq!(code(&r), "epsilon_below_floor");
        let e = &r.json()["error"];
        // Δ = 7305 days over 2000–2040, half the budget to the sum: ⌈57·10⁶·7305/2^31⌉ = 194
        // millionths each, so ε ≥ 0.000388.
        assert_eq!(e["min_epsilon"], 0.000388, "{e}");
        let msg = e["message"].as_str().unwrap();
        assert!(
            msg.contains("0.000388") && msg.contains("production_date"),
            "{msg}"
        );
    }
    assert_eq!(spent().await, 0.0, "nothing charged");
    let listed = call(
        w.addr(0),
        "GET",
        "/api/v1/queries",
        Some(&tina),
        Value::Null,
    )
    .await
    .json();
    assert_eq!(listed["total"], 0, "no query reached the ledger: {listed}");
    // At the floor the same query is admitted and charged.
    let r = submit(0.000388).await;
    assert_eq!(r.status, 202, "{}", r.json());
    assert!((spent().await - 0.000388).abs() < 1e-9);
    w.stop().await;
}

/// Issue 24 §4: a researcher could keep any number of queries open at once (twenty grouped
/// counts at tiny ε saturated a member for minutes). Now at most `max_queries_in_flight`
/// (default 4) may be open: a flood of twelve concurrent submissions gets four admitted and
/// 429 with `Retry-After` for the rest, which are not charged; once they end, more are taken.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn researcher_flood_is_limited_in_flight() {
    let w = world(ApiConfig::default()).await;
    let admin = client::login(w.addr(0), "admin", ADMIN_PW).await.unwrap();
    let pw = register(&w, 0, &admin, "flo", 50.0).await;
    let flo = sign_in(&w, 0, "flo", &pw).await;
    let at = w.addr(0);
    let submit = || {
        let flo = flo.clone();
        async move {
            call(
                at,
                "POST",
                "/api/v1/queries",
                Some(&flo),
                json!({ "kind": "grouped_count", "target": "speciality", "epsilon": 0.5 }),
            )
            .await
        }
    };
    let tasks: Vec<_> = (0..12).map(|_| tokio::spawn(submit())).collect();
    let mut replies = Vec::new();
    for t in tasks {
        replies.push(t.await.unwrap());
    }
    let admitted: Vec<String> = replies
        .iter()
        .filter(|r| r.status == 202)
        .map(|r| r.json()["id"].as_str().unwrap().to_owned())
        .collect();
    let limited: Vec<&Reply> = replies.iter().filter(|r| r.status == 429).collect();
    assert_eq!(admitted.len(), 4, "admitted at once");
    assert_eq!(limited.len(), 8);
    for r in &limited {
        assert_eq!(code(r), "too_many_queries_in_flight");
        assert!(r.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("at most 4"));
        let retry = r.header("retry-after").expect("Retry-After");
        assert!(retry.parse::<u64>().unwrap() >= 1);
    }
    let b = call(at, "GET", "/api/v1/budget", Some(&flo), Value::Null)
        .await
        .json();
    assert_eq!(
        b["researcher"]["epsilon_spent"], 2.0,
        "only the admitted four are charged"
    );
    // Once they have ended, new ones are taken.
    for id in &admitted {
        let q = call(
            at,
            "GET",
            &format!("/api/v1/queries/{id}?wait=60"),
            Some(&flo),
            Value::Null,
        )
        .await
        .json();
        assert_ne!(q["status"], "pending", "{q}");
    }
    assert_eq!(submit().await.status, 202);
    w.stop().await;
}

/// Issue 24 §3 in the dashboard: an admin sees each pending change, who approved it and how
/// many approvals it still needs, and approves it with a button (served HTML, no browser).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_shows_pending_changes_and_approves_them() {
    let w = world(ApiConfig::default()).await;
    let admin0 = client::login(w.addr(0), "admin", ADMIN_PW).await.unwrap();
    let admin1 = client::login(w.addr(1), "admin", ADMIN_PW).await.unwrap();
    let at1 = w.addr(1);
    let page = |token: String| async move {
        let cookie = format!("medtech_session={token}");
        let r = client::request_with(
            at1,
            "GET",
            "/ui/admin/changes",
            None,
            None,
            &[("cookie", &cookie)],
            b"",
        )
        .await
        .unwrap();
        assert_eq!(r.status, 200);
        String::from_utf8(r.body).unwrap()
    };
    let html = page(admin1.clone()).await;
    assert!(html.contains("id=\"no-pending\""), "{html}");
    // One admin registers a researcher: pending, approved by member 0 only.
    let r = call(
        w.addr(0),
        "POST",
        "/api/v1/researchers",
        Some(&admin0),
        json!({ "username": "pia", "epsilon_budget": 2.0 }),
    )
    .await;
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    let pending = call(
        w.addr(1),
        "GET",
        "/api/v1/changes/pending",
        Some(&admin1),
        Value::Null,
    )
    .await
    .json();
    let list = pending["pending"].as_array().unwrap().clone();
    assert!(!list.is_empty());
    let member0 = list[0]["approved_by"][0].as_str().unwrap().to_owned();
    let html = page(admin1.clone()).await;
    assert!(html.contains("id=\"pending-changes\""), "{html}");
    let csrf = html
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|t| t.split('"').next())
        .unwrap()
        .to_owned();
    for p in &list {
        let id = p["id"].as_str().unwrap();
        let row = html
            .split(&format!("<tr data-change=\"{id}\">"))
            .nth(1)
            .and_then(|t| t.split("</tr>").next())
            .unwrap_or_else(|| panic!("no row for {id}: {html}"));
        assert!(row.contains(&member0), "who approved: {row}");
        assert!(
            row.contains("<td class=\"num\">1</td>"),
            "one more approval: {row}"
        );
        assert!(
            row.contains(&format!("action=\"/ui/admin/changes/{id}/approve\"")),
            "{row}"
        );
        // The Approve button, as the browser posts it.
        let cookie = format!("medtech_session={admin1}");
        let r = client::request_with(
            w.addr(1),
            "POST",
            &format!("/ui/admin/changes/{id}/approve"),
            None,
            Some("application/x-www-form-urlencoded"),
            &[("cookie", &cookie)],
            format!("csrf={csrf}").as_bytes(),
        )
        .await
        .unwrap();
        let body = String::from_utf8_lossy(&r.body);
        assert_eq!(r.status, 200, "{body}");
        assert!(body.contains("it is applied"), "{body}");
    }
    let after = call(
        w.addr(1),
        "GET",
        "/api/v1/changes/pending",
        Some(&admin1),
        Value::Null,
    )
    .await
    .json();
    assert_eq!(after["pending"].as_array().unwrap().len(), 0, "{after}");
    assert!(page(admin1.clone()).await.contains("id=\"no-pending\""));
    w.stop().await;
}

// ---- Idempotency-Key (issue 28 §1: ε is never spent by accident) ---------------------------

/// A grouped count at ε = 0.5.
fn grouped(eps: f64) -> Value {
    json!({ "kind": "grouped_count", "target": "speciality", "epsilon": eps })
}

/// `POST /api/v1/queries` at `addr` under the `Idempotency-Key` header values `keys`.
async fn submit_with_keys(addr: SocketAddr, token: &str, keys: &[&str], body: &Value) -> Reply {
    let b = serde_json::to_vec(body).unwrap();
    let headers: Vec<(&str, &str)> = keys.iter().map(|k| ("idempotency-key", *k)).collect();
    client::request_with(
        addr,
        "POST",
        "/api/v1/queries",
        Some(token),
        Some("application/json"),
        &headers,
        &b,
    )
    .await
    .unwrap()
}

async fn submit_keyed(addr: SocketAddr, token: &str, key: &str, body: &Value) -> Reply {
    submit_with_keys(addr, token, &[key], body).await
}

/// What every running member's ledger state has charged `researcher`, in millionths of ε, once
/// all of them have applied the same log.
async fn spent_on_every_member(w: &World, researcher: &str) -> Vec<u64> {
    let leader = w
        .fed
        .ledger
        .wait_leader(&[], Duration::from_secs(30))
        .await
        .unwrap();
    let size = w.fed.ledger.nodes[&leader].head().unwrap().0;
    w.fed
        .ledger
        .wait_agree(size, Duration::from_secs(30))
        .await
        .unwrap();
    let subject = medtech_noise::Subject::Researcher(researcher.into());
    w.fed
        .ledger
        .nodes
        .values()
        .map(|n| {
            n.read()
                .unwrap()
                .state()
                .budgets()
                .spent(&subject)
                .epsilon
                .0
        })
        .collect()
}

/// How many `SubmitQuery` entries for `researcher` each running member's applied log holds
/// (call after [`spent_on_every_member`], which waits until the members agree).
fn submissions_on_every_member(w: &World, researcher: &str) -> Vec<usize> {
    use medtech_ledger::entry::{Kind, ParsedEntry};
    w.fed
        .ledger
        .nodes
        .values()
        .map(|n| {
            let size = n.head().unwrap().0;
            n.clone_handle()
                .entries_from(0, size as usize)
                .unwrap()
                .iter()
                .filter(|b| {
                    matches!(ParsedEntry::decode(b).unwrap().kind(),
                        Some(Kind::SubmitQuery(q)) if q.on_behalf_of == researcher)
                })
                .count()
        })
        .collect()
}

/// The attack (a failure, really): a researcher's client retries a submission whose response
/// it lost — a timeout, a 503 after the entry committed, the member it spoke to crashing — and
/// the retry, a fresh query, is charged again and never refunded. Under one Idempotency-Key the
/// retry is answered with the first 202 (same id, same body) through any member, also after the
/// Raft leader is killed and another elected, and every member holds one submission and has
/// charged it once (all three before the leader change, both survivors after the retry).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_submission_is_charged_once_on_every_member_across_a_leader_change() {
    let mut w = world(ApiConfig::default()).await;
    let admin = client::login(w.addr(0), "admin", ADMIN_PW).await.unwrap();
    let pw = register(&w, 0, &admin, "rita", 5.0).await;
    let rita = sign_in(&w, 0, "rita", &pw).await;
    let key = "4f9c1c2e-retry-me";

    let first = submit_keyed(w.addr(0), &rita, key, &grouped(0.5)).await;
    assert_eq!(first.status, 202, "{}", first.json());
    assert_eq!(first.header("idempotent-replayed"), None);
    let id = first.json()["id"].as_str().unwrap().to_owned();

    // The retry reaches another member, whose memory never saw the first request.
    let again = submit_keyed(w.addr(1), &rita, key, &grouped(0.5)).await;
    assert_eq!(again.status, 202, "{}", again.json());
    assert_eq!(again.json(), first.json(), "the original 202");
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    assert_eq!(
        again.header("location"),
        Some(format!("/api/v1/queries/{id}").as_str())
    );

    // Every member has charged it once so far.
    assert_eq!(spent_on_every_member(&w, "rita").await, vec![500_000; 3]);

    // The leader dies; the others elect a new one; the retry goes through a survivor.
    let leader = w
        .fed
        .ledger
        .wait_leader(&[], Duration::from_secs(30))
        .await
        .unwrap();
    w.fed.ledger.kill(leader).await.unwrap();
    let new_leader = w
        .fed
        .ledger
        .wait_leader(&[leader], Duration::from_secs(30))
        .await
        .unwrap();
    assert_ne!(new_leader, leader);
    // API server i serves member i (Raft id i + 1).
    let via = (0..2).find(|i| *i as u64 + 1 != leader).unwrap();
    let after = submit_keyed(w.addr(via), &rita, key, &grouped(0.5)).await;
    assert_eq!(after.status, 202, "{}", after.json());
    assert_eq!(
        after.json(),
        first.json(),
        "the original 202 after the leader change"
    );

    // Every surviving member holds one submission and charged it once. (The killed member
    // cannot be restarted in this world: its API server and query loop keep its store open.)
    let spent = spent_on_every_member(&w, "rita").await;
    assert_eq!(spent, vec![500_000; 2], "charged once on every member");
    assert_eq!(submissions_on_every_member(&w, "rita"), vec![1; 2]);
    let b = call(
        w.addr(via),
        "GET",
        "/api/v1/budget",
        Some(&rita),
        Value::Null,
    )
    .await
    .json();
    assert_eq!(b["researcher"]["epsilon_spent"], 0.5, "{b}");
    w.stop().await;
}

/// The attack: a client reuses one Idempotency-Key for a different query (a bug, or a key
/// generator that repeats). Answering with the first query would hand it another query's
/// result; admitting it would make the key mean nothing. It is refused (422
/// `idempotency_key_reused`, naming the first query) and charges nothing; another researcher's
/// use of the same key is independent, and malformed keys are 400 before anything is charged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_idempotency_key_with_another_query_is_refused_and_charges_nothing() {
    let w = world(ApiConfig::default()).await;
    let admin = client::login(w.addr(0), "admin", ADMIN_PW).await.unwrap();
    let pw = register(&w, 0, &admin, "ken", 5.0).await;
    let ken = sign_in(&w, 0, "ken", &pw).await;
    let pw = register(&w, 1, &admin_at(&w, 1).await, "kim", 5.0).await;
    let kim = sign_in(&w, 1, "kim", &pw).await;

    let first = submit_keyed(w.addr(0), &ken, "k-1", &grouped(0.5)).await;
    assert_eq!(first.status, 202, "{}", first.json());
    let id = first.json()["id"].as_str().unwrap().to_owned();
    for via in [0, 1] {
        let other = submit_keyed(w.addr(via), &ken, "k-1", &grouped(0.7)).await;
        assert_eq!(other.status, 422, "{}", other.json());
        assert_eq!(code(&other), "idempotency_key_reused");
        assert_eq!(other.json()["error"]["query_id"], id.as_str());
        // The same query written differently (key order, whitespace) is the same request.
        let same = client::request_with(
            w.addr(via),
            "POST",
            "/api/v1/queries",
            Some(&ken),
            Some("application/json"),
            &[("idempotency-key", "k-1")],
            br#"{ "epsilon": 0.5, "target": "speciality", "kind": "grouped_count" }"#,
        )
        .await
        .unwrap();
        assert_eq!(same.status, 202, "{}", same.json());
        assert_eq!(same.json()["id"], id.as_str());
    }
    // Kim's "k-1" is hers: a new query, charged to her.
    let kims = submit_keyed(w.addr(1), &kim, "k-1", &grouped(0.7)).await;
    assert_eq!(kims.status, 202, "{}", kims.json());
    assert_ne!(kims.json()["id"], id.as_str());

    // Malformed keys: 400, nothing proposed.
    let long = "x".repeat(256);
    for keys in [
        vec![""],
        vec![long.as_str()],
        vec!["tab\tinside"],
        vec!["caf\u{e9}"],
        vec!["one", "two"],
    ] {
        let r = submit_with_keys(w.addr(0), &ken, &keys, &grouped(0.5)).await;
        assert_eq!(r.status, 400, "{keys:?}: {}", r.json());
        assert_eq!(code(&r), "invalid_idempotency_key", "{keys:?}");
    }
    let max = "~".repeat(255);
    let r = submit_keyed(w.addr(0), &ken, &max, &grouped(0.25)).await;
    assert_eq!(r.status, 202, "a 255-byte key is accepted: {}", r.json());

    let spent = spent_on_every_member(&w, "ken").await;
    assert_eq!(spent, vec![750_000; 3], "0.5 + 0.25, on every member");
    assert_eq!(spent_on_every_member(&w, "kim").await, vec![700_000; 3]);
    assert_eq!(submissions_on_every_member(&w, "ken"), vec![2; 3]);
    w.stop().await;
}

async fn admin_at(w: &World, i: usize) -> String {
    client::login(w.addr(i), "admin", ADMIN_PW).await.unwrap()
}

/// The attack: a client whose request timed out retries at once while the first is still
/// being proposed — or fires the same request at two members — so two `SubmitQuery` entries
/// under one key race to the ledger. Neither member's memory knows of the other's; the
/// ledger's order does: the second entry is rejected, and its requester gets the first one's
/// 202. One query, one charge, on every member.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_submissions_under_one_key_are_charged_once() {
    let config = ApiConfig {
        max_queries_in_flight: 16,
        ..ApiConfig::default()
    };
    let w = world(config).await;
    let admin = client::login(w.addr(0), "admin", ADMIN_PW).await.unwrap();
    let pw = register(&w, 0, &admin, "cora", 5.0).await;
    let cora = sign_in(&w, 0, "cora", &pw).await;
    let tasks: Vec<_> = (0..6)
        .map(|i| {
            let (addr, cora) = (w.addr(i % 2), cora.clone());
            tokio::spawn(async move { submit_keyed(addr, &cora, "same-key", &grouped(0.5)).await })
        })
        .collect();
    let mut ids = std::collections::BTreeSet::new();
    let mut replays = 0;
    for t in tasks {
        let r = t.await.unwrap();
        assert_eq!(r.status, 202, "{}", r.json());
        ids.insert(r.json()["id"].as_str().unwrap().to_owned());
        replays += usize::from(r.header("idempotent-replayed") == Some("true"));
    }
    assert_eq!(ids.len(), 1, "one query id for all: {ids:?}");
    assert_eq!(replays, 5, "one admitted, five answered with it");
    let spent = spent_on_every_member(&w, "cora").await;
    assert_eq!(spent, vec![500_000; 3], "charged once on every member");
    assert_eq!(submissions_on_every_member(&w, "cora"), vec![1; 3]);
    w.stop().await;
}

/// The failure: a researcher at their in-flight cap retries a query that was admitted (its
/// response lost). The retry is not a new query in flight: it must get the original 202, not
/// 429 — the client would otherwise give up on a query it has paid for, or retry it under a
/// new key and pay again. A new key at the cap is still 429.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_of_an_admitted_key_is_not_refused_by_the_in_flight_cap() {
    let config = ApiConfig {
        max_queries_in_flight: 1,
        ..ApiConfig::default()
    };
    let w = world(config).await;
    let admin = client::login(w.addr(0), "admin", ADMIN_PW).await.unwrap();
    let pw = register(&w, 0, &admin, "cap", 5.0).await;
    let cap = sign_in(&w, 0, "cap", &pw).await;
    let first = submit_keyed(w.addr(0), &cap, "paid-for", &grouped(0.5)).await;
    assert_eq!(first.status, 202, "{}", first.json());
    // Member 1 sees the researcher at the cap: one open query in its index (held open here,
    // so the test does not race the query's end).
    w.fed.indexes[1].write().unwrap().insert(
        "q-held-open".into(),
        medtech_federation::node::QueryInfo {
            id: "q-held-open".into(),
            researcher: "cap".into(),
            spec: None,
            submitted_ms: 0,
            sequence: 0,
            contributions: 0,
            partials: 0,
            outcome: None,
            ended_ms: None,
        },
    );
    let new = submit_keyed(w.addr(1), &cap, "another", &grouped(0.5)).await;
    assert_eq!(new.status, 429, "a new key at the cap: {}", new.json());
    let retry = submit_keyed(w.addr(1), &cap, "paid-for", &grouped(0.5)).await;
    assert_eq!(retry.status, 202, "{}", retry.json());
    assert_eq!(retry.json(), first.json());
    assert_eq!(spent_on_every_member(&w, "cap").await, vec![500_000; 3]);
    assert_eq!(submissions_on_every_member(&w, "cap"), vec![1; 3]);
    w.stop().await;
}

/// Issue 28 §2: a researcher sees what ε buys before spending it. A preview compiles the query
/// as a submission would and answers its cost, the ε floor of its kind and target, and each
/// output's 95 % half-width for the fewest and for all noise shares, from public parameters
/// alone; it charges nothing and puts nothing on the ledger. The released result's interval
/// then lies within the previewed range; an Average previews its sum and count at 97.5 %
/// each; a refused query is refused as a submission would be; `affordable` follows the budget.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_preview_charges_nothing_and_predicts_the_released_interval() {
    let w = world(ApiConfig::default()).await;
    let admin = client::login(w.addr(0), "admin", ADMIN_PW).await.unwrap();
    let pw = register(&w, 0, &admin, "pia", 1.5).await;
    let pia = sign_in(&w, 0, "pia", &pw).await;
    let at = w.addr(0);
    let preview = |body: Value| {
        let pia = pia.clone();
        async move { call(at, "POST", "/api/v1/queries/preview", Some(&pia), body).await }
    };
    let r = preview(grouped(1.0)).await;
    assert_eq!(r.status, 200, "{}", r.json());
    let p = r.json();
    assert_eq!(p["epsilon"], 1.0, "{p}");
    assert_eq!(p["affordable"], true, "{p}");
    assert_eq!(p["budget"]["researcher"]["epsilon_remaining"], 1.5, "{p}");
    let fewest = p["outputs"][0]["half_width"]["fewest_shares"]
        .as_u64()
        .unwrap();
    let all = p["outputs"][0]["half_width"]["all_shares"]
        .as_u64()
        .unwrap();
    assert!(0 < fewest && fewest <= all, "{p}");
    assert_eq!(p["outputs"][0]["confidence"], 0.95, "{p}");
    assert!(p["min_epsilon"].as_f64().unwrap() < 1.0, "{p}");
    assert!(!p["labels"].as_array().unwrap().is_empty(), "{p}");
    // Same parameters, same answer: nothing in it depends on the data or on chance.
    assert_eq!(preview(grouped(1.0)).await.json()["outputs"], p["outputs"]);
    // A smaller ε gives a wider interval.
    let wide = preview(grouped(0.1)).await.json();
    assert!(
        wide["outputs"][0]["half_width"]["fewest_shares"]
            .as_u64()
            .unwrap()
            > fewest
    );
    // More than the budget left: previewed, not affordable.
    assert_eq!(preview(grouped(2.0)).await.json()["affordable"], false);
    // An Average: the sum and the count, each at 97.5 %.
    let avg = preview(json!({ "kind": "average", "target": "usage_hours", "epsilon": 1.0 })).await;
    assert_eq!(avg.status, 200, "{}", avg.json());
    let outs = avg.json()["outputs"].as_array().unwrap().clone();
    assert_eq!(
        outs.iter()
            .map(|o| o["name"].as_str().unwrap())
            .collect::<Vec<_>>(),
        ["sum", "count"]
    );
    assert!(outs.iter().all(|o| o["confidence"] == 0.975));
    // Refused as a submission would be.
    let r =
        preview(json!({ "kind": "average", "target": "production_date", "epsilon": 0.0001 })).await;
    assert_eq!((r.status, code(&r)), (422, "epsilon_below_floor".into()));
    assert_eq!(r.json()["error"]["min_epsilon"], 0.000388);
    let r = preview(json!({ "kind": "grouped_count", "target": "no_such_field", "epsilon": 1.0 }))
        .await;
    assert_eq!((r.status, code(&r)), (422, "invalid_query".into()));
    // Only researchers preview.
    let r = call(
        w.addr(0),
        "POST",
        "/api/v1/queries/preview",
        Some(&admin),
        grouped(1.0),
    )
    .await;
    assert_eq!(r.status, 403);
    // Nothing charged, nothing on the ledger.
    let budget = call(w.addr(0), "GET", "/api/v1/budget", Some(&pia), Value::Null)
        .await
        .json();
    assert_eq!(budget["researcher"]["epsilon_spent"], 0.0, "{budget}");
    let listed = call(w.addr(0), "GET", "/api/v1/queries", Some(&pia), Value::Null)
        .await
        .json();
    assert_eq!(listed["total"], 0, "{listed}");
    // The release's interval is within the previewed range.
    let r = call(
        w.addr(0),
        "POST",
        "/api/v1/queries",
        Some(&pia),
        grouped(1.0),
    )
    .await;
    assert_eq!(r.status, 202, "{}", r.json());
    let id = r.json()["id"].as_str().unwrap().to_owned();
    let q = call(
        w.addr(0),
        "GET",
        &format!("/api/v1/queries/{id}?wait=60"),
        Some(&pia),
        Value::Null,
    )
    .await
    .json();
    assert_eq!(q["status"], "released", "{q}");
    for bin in q["result"]["result"]["GroupedCount"].as_array().unwrap() {
        let h = bin["half_width"].as_u64().unwrap();
        assert!(
            fewest <= h && h <= all,
            "released ±{h}, previewed {fewest}..{all}"
        );
    }
    w.stop().await;
}

/// Issue 28 §3: pages that reach everything. The ledger's `kind` filter applied after the
/// limit, so `?kind=submit_query&limit=1` from 0 answered an empty page while submissions
/// existed (the first entries are the committee's and the registration's); query history
/// could not reach past its first 1,000. Now a filtered ledger page holds `limit` matching
/// entries and `next` leads on, and query history pages with `before`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filtered_ledger_pages_and_query_history_reach_every_entry() {
    let w = world(ApiConfig::default()).await;
    let admin = client::login(w.addr(0), "admin", ADMIN_PW).await.unwrap();
    let pw = register(&w, 0, &admin, "paul", 5.0).await;
    let paul = sign_in(&w, 0, "paul", &pw).await;
    let mut ids = Vec::new();
    for _ in 0..3 {
        let r = call(
            w.addr(0),
            "POST",
            "/api/v1/queries",
            Some(&paul),
            grouped(0.5),
        )
        .await;
        assert_eq!(r.status, 202, "{}", r.json());
        ids.push(r.json()["id"].as_str().unwrap().to_owned());
    }
    // Every submission, one per page, following `next`.
    let mut seen = Vec::new();
    let mut from = Some(0u64);
    while let Some(f) = from {
        let page = call(
            w.addr(0),
            "GET",
            &format!("/api/v1/ledger/entries?kind=submit_query&limit=1&from={f}"),
            Some(&admin),
            Value::Null,
        )
        .await
        .json();
        let entries = page["entries"].as_array().unwrap();
        assert!(entries.len() <= 1, "{page}");
        if seen.is_empty() {
            assert_eq!(
                entries.len(),
                1,
                "the first page holds a submission: {page}"
            );
        }
        for e in entries {
            assert_eq!(e["kind"], "submit_query", "{e}");
            seen.push(e["detail"]["query_id"].as_str().unwrap().to_owned());
        }
        from = page["next"].as_u64();
        assert!(from.is_none_or(|n| n > f), "next moves on: {page}");
    }
    seen.sort();
    let mut submitted = ids.clone();
    submitted.sort();
    assert_eq!(seen, submitted);
    // Query history, two per page, newest first, reaching the oldest (once the member's
    // query index has applied all three submissions).
    let mut first = Value::Null;
    for _ in 0..100 {
        first = call(
            w.addr(0),
            "GET",
            "/api/v1/queries?limit=2",
            Some(&paul),
            Value::Null,
        )
        .await
        .json();
        if first["total"] == 3 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(first["total"], 3, "{first}");
    assert_eq!(first["queries"].as_array().unwrap().len(), 2);
    let next = first["next"].as_u64().expect("a second page");
    let second = call(
        w.addr(0),
        "GET",
        &format!("/api/v1/queries?limit=2&before={next}"),
        Some(&paul),
        Value::Null,
    )
    .await
    .json();
    assert_eq!(second["queries"].as_array().unwrap().len(), 1, "{second}");
    assert_eq!(second["next"], Value::Null, "{second}");
    let mut listed: Vec<String> = first["queries"]
        .as_array()
        .unwrap()
        .iter()
        .chain(second["queries"].as_array().unwrap())
        .map(|q| q["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(listed[0], ids[2], "newest first");
    listed.sort();
    ids.sort();
    assert_eq!(listed, ids);
    w.stop().await;
}

/// Issue 28 §3: errors are RFC 9457 problem details — `application/problem+json`, with `type`,
/// `title` (the status phrase), `status` (the HTTP status, repeated), `detail` and the stable
/// `code` — so generic HTTP tooling reads them; details such as `min_epsilon` are extension
/// members, and the earlier `error` object stays for existing clients.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_are_rfc_9457_problem_details() {
    let w = world(ApiConfig::default()).await;
    let admin = client::login(w.addr(0), "admin", ADMIN_PW).await.unwrap();
    let pw = register(&w, 0, &admin, "rhea", 5.0).await;
    let rhea = sign_in(&w, 0, "rhea", &pw).await;
    for (path, body, status, code) in [
        (
            "/api/v1/queries",
            json!({ "kind": "average", "target": "production_date", "epsilon": 0.0001 }),
            422,
            "epsilon_below_floor",
        ),
        (
            "/api/v1/queries",
            json!({ "kind": "sum", "epsilon": 1.0 }),
            400,
            "invalid_json",
        ),
    ] {
        let r = call(w.addr(0), "POST", path, Some(&rhea), body).await;
        assert_eq!(r.status, status, "{}", r.json());
        assert_eq!(r.header("content-type"), Some("application/problem+json"));
        let p = r.json();
        assert_eq!(p["status"], status, "{p}");
        assert_eq!(p["code"], code, "{p}");
        assert_eq!(
            p["type"],
            format!("tag:medtech-chain,2026:problem:{code}"),
            "{p}"
        );
        assert!(p["title"].as_str().is_some_and(|t| !t.is_empty()), "{p}");
        assert!(p["detail"].as_str().is_some_and(|t| !t.is_empty()), "{p}");
        assert_eq!(p["error"]["code"], code, "the earlier shape stays: {p}");
    }
    let r = call(
        w.addr(0),
        "POST",
        "/api/v1/queries",
        Some(&rhea),
        json!({ "kind": "average", "target": "production_date", "epsilon": 0.0001 }),
    )
    .await;
    assert_eq!(r.json()["min_epsilon"], 0.000388);
    // Unauthenticated: a problem too.
    let r = call(w.addr(0), "GET", "/api/v1/budget", None, Value::Null).await;
    assert_eq!((r.status, r.json()["status"].clone()), (401, json!(401)));
    assert_eq!(r.header("content-type"), Some("application/problem+json"));
    w.stop().await;
}

/// Issue 28 §7: every response carries a request id (`X-Request-Id`: the caller's if it is a
/// sane token, else a fresh one), which the access log records too; a request that takes
/// longer than `request_timeout` — here a client that sends its headers and then stalls its
/// body — is answered 503 `request_timeout` instead of holding the connection's handler.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_get_ids_and_a_stalled_request_times_out() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let w = world(ApiConfig {
        request_timeout: std::time::Duration::from_secs(3),
        ..ApiConfig::default()
    })
    .await;
    let r = call(w.addr(0), "GET", "/health", None, Value::Null).await;
    let generated = r.header("x-request-id").unwrap().to_owned();
    assert_eq!(generated.len(), 24, "{generated}");
    let again = call(w.addr(0), "GET", "/health", None, Value::Null).await;
    assert_ne!(
        again.header("x-request-id"),
        Some(generated.as_str()),
        "fresh each time"
    );
    for (sent, kept) in [
        ("trace-42.a_b", true),
        ("has space", false),
        (&*"x".repeat(65), false),
    ] {
        let r = client::request_with(
            w.addr(0),
            "GET",
            "/health",
            None,
            None,
            &[("x-request-id", sent)],
            b"",
        )
        .await
        .unwrap();
        let got = r.header("x-request-id").unwrap();
        assert_eq!(got == sent, kept, "{sent:?} → {got:?}");
    }
    // Headers, then a stalled body.
    let mut s = tokio::net::TcpStream::connect(w.addr(0)).await.unwrap();
    s.write_all(
        b"POST /api/v1/login HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n\
          content-length: 100\r\nx-request-id: slow-1\r\n\r\n{\"user",
    )
    .await
    .unwrap();
    let t0 = std::time::Instant::now();
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(std::time::Duration::from_secs(20), s.read(&mut buf))
        .await
        .expect("answered before the test's own limit")
        .unwrap();
    let text = String::from_utf8_lossy(&buf[..n]).to_lowercase();
    assert!(text.starts_with("http/1.1 503"), "{text}");
    assert!(
        text.contains("request_timeout") && text.contains("x-request-id: slow-1"),
        "{text}"
    );
    assert!(
        t0.elapsed() >= std::time::Duration::from_secs(2),
        "not before the timeout"
    );
    w.stop().await;
}
