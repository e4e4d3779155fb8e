//! The `medtech` binary as operators run it: `committee init` (CA, keys, config files and a
//! dealer-free 512-bit key ceremony), then one `medtech node --config` process per hospital on
//! loopback, every interaction over HTTP. One member is killed with SIGKILL: the next query
//! proceeds without its data; restarted, it catches up from its disk. The leader anchors the
//! cosigned checkpoints to a (simulated) Fabric gateway configured in `node.toml`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use medtech_federation::api::client;
use medtech_ledger::fabric::contract::{
    CommitteeKeys, CommitteeMember, ContractConfig, DEFAULT_CHAINCODE, REGISTER,
};
use medtech_ledger::fabric::sim::{issue_admin_identity, issue_identity, SimulatedGateway};
use medtech_ledger::fabric::{GatewayClient, GatewayEndpoint, MspIdentity};
use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_medtech");

fn free_base(count: u16) -> u16 {
    // A base with `count` consecutive free loopback ports.
    for _ in 0..200 {
        let base = 20_000 + (rand_core::RngCore::next_u32(&mut rand_core::OsRng) % 30_000) as u16;
        let ok = (0..count).all(|i| std::net::TcpListener::bind(("127.0.0.1", base + i)).is_ok());
        if ok {
            return base;
        }
    }
    panic!("no free ports");
}

struct Member {
    name: String,
    config: PathBuf,
    api: SocketAddr,
    log: PathBuf,
    child: Option<Child>,
}

impl Member {
    fn start(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let child = Command::new(BIN)
            .args(["node", "--config"])
            .arg(&self.config)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
    }

    fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().unwrap();
            c.wait().unwrap();
        }
    }

    fn terminate(&mut self) -> Option<std::process::ExitStatus> {
        let mut c = self.child.take()?;
        Command::new("kill")
            .arg("-TERM")
            .arg(c.id().to_string())
            .status()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(s) = c.try_wait().unwrap() {
                return Some(s);
            }
            if Instant::now() > deadline {
                c.kill().unwrap();
                return c.wait().ok();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn admin_password(&self, dir: &Path) -> String {
        std::fs::read_to_string(dir.join(&self.name).join("data/admin-password"))
            .unwrap()
            .trim()
            .to_owned()
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        self.kill9();
    }
}

async fn wait_ready(addr: SocketAddr, within: Duration, log: &Path) {
    let deadline = Instant::now() + within;
    loop {
        if let Ok(r) = client::json(addr, "GET", "/ready", None, &Value::Null).await {
            if r.status == 200 {
                return;
            }
        }
        assert!(
            Instant::now() < deadline,
            "{addr} not ready within {within:?}; its log:\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn call(addr: SocketAddr, method: &str, path: &str, token: &str, body: Value) -> Value {
    let r = client::json(addr, method, path, Some(token), &body)
        .await
        .unwrap();
    assert!(
        r.status < 300,
        "{method} {path}: {} {}",
        r.status,
        String::from_utf8_lossy(&r.body)
    );
    r.json()
}

async fn count_query(at: SocketAddr, token: &str, poll: SocketAddr) -> Value {
    let r = call(
        at,
        "POST",
        "/api/v1/queries",
        token,
        json!({ "kind": "count", "epsilon": 1.0 }),
    )
    .await;
    let id = r["id"].as_str().unwrap().to_owned();
    let q = call(
        poll,
        "GET",
        &format!("/api/v1/queries/{id}?wait=60"),
        token,
        Value::Null,
    )
    .await;
    assert_eq!(q["status"], "released", "{q}");
    q
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_member_processes_answer_queries_survive_a_sigkill_and_keep_secrets_out_of_logs() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("committee");
    let committee_port = free_base(3);
    let api_port = free_base(3);
    let out = Command::new(BIN)
        .args([
            "committee",
            "init",
            "--parties",
            "3",
            "--threshold",
            "2",
            "--bits",
            "512",
        ])
        .arg("--dir")
        .arg(&dir)
        .args([
            "--committee-port",
            &committee_port.to_string(),
            "--api-port",
            &api_port.to_string(),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(dir.join("ceremony/transcript.json").exists());
    assert!(
        !dir.join("ceremony/party-1/share.json").exists(),
        "shares moved to their members"
    );

    // A second init into the same directory refuses to overwrite the committee.
    let again = Command::new(BIN)
        .args(["committee", "init", "--bits", "512", "--dir"])
        .arg(&dir)
        .output()
        .unwrap();
    assert!(!again.status.success());

    // The members anchor the cosigned checkpoints to a Fabric channel (the leader submits):
    // here an in-process gateway that checks every proposal and envelope signature (medtech_ledger::fabric::sim).
    let gateway = SimulatedGateway::new("medtech", DEFAULT_CHAINCODE).unwrap();
    gateway.configure(ContractConfig {
        admin_msps: vec!["Hospital1MSP".into()],
        writer_msps: Vec::new(),
    });
    let (cert, key) = issue_identity("Hospital1MSP", "hospital-a-anchor").unwrap();
    gateway.enroll("Hospital1MSP", &cert);
    let running_gateway = gateway.serve().await.unwrap();
    let fabric_dir = tmp.path().join("fabric");
    std::fs::create_dir_all(&fabric_dir).unwrap();
    for (f, text) in [
        ("cert.pem", &cert),
        ("key.pem", &key),
        ("ca.pem", &running_gateway.ca_pem),
    ] {
        std::fs::write(fabric_dir.join(f), text).unwrap();
    }
    for x in ["a", "b", "c"] {
        let node = dir.join(format!("hospital-{x}/node.toml"));
        let mut toml = std::fs::read_to_string(&node).unwrap();
        toml.push_str(&format!(
        "\n[fabric]\ngateway = \"{}\"\ntls_ca = \"{}\"\nserver_name = \"{}\"\nmsp_id = \"Hospital1MSP\"\ncert = \"{}\"\nkey = \"{}\"\nchannel = \"medtech\"\nevery_seconds = 1\n",
        running_gateway.addr,
        fabric_dir.join("ca.pem").display(),
        running_gateway.server_name,
        fabric_dir.join("cert.pem").display(),
        fabric_dir.join("key.pem").display(),
    ));
        std::fs::write(&node, toml).unwrap();
    }

    let mut members: Vec<Member> = ["a", "b", "c"]
        .iter()
        .enumerate()
        .map(|(i, x)| Member {
            name: format!("hospital-{x}"),
            config: dir.join(format!("hospital-{x}/node.toml")),
            api: SocketAddr::from(([127, 0, 0, 1], api_port + i as u16)),
            log: tmp.path().join(format!("hospital-{x}.log")),
            child: None,
        })
        .collect();
    for m in &mut members {
        m.start();
    }
    for m in &members {
        wait_ready(m.api, Duration::from_secs(60), &m.log).await;
    }

    // Each hospital's admin creates an operator, who uploads 200 devices.
    let mut admins = Vec::new();
    for (i, m) in members.iter().enumerate() {
        let admin = client::first_login(
            m.api,
            "admin",
            &m.admin_password(&dir),
            "the admin's own password",
        )
        .await
        .unwrap();
        let op = call(
            m.api,
            "POST",
            "/api/v1/accounts",
            &admin,
            json!({ "username": "operator", "role": "operator" }),
        )
        .await;
        let op = client::first_login(
            m.api,
            "operator",
            op["password"].as_str().unwrap(),
            "the operator's own password",
        )
        .await
        .unwrap();
        let path = tmp.path().join(format!("devices-{i}.csv"));
        let g = Command::new(BIN)
            .args([
                "generate",
                "--hospital",
                &m.name,
                "--devices",
                "200",
                "--seed",
                &i.to_string(),
                "--out",
            ])
            .arg(&path)
            .output()
            .unwrap();
        assert!(g.status.success());
        let r = client::request(
            m.api,
            "POST",
            "/api/v1/devices",
            Some(&op),
            Some("text/csv"),
            &std::fs::read(&path).unwrap(),
        )
        .await
        .unwrap();
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        assert_eq!(r.json()["inserted"], 200);
        admins.push(admin);
    }

    // The federation's dataset budget, then a researcher registered at member a.
    call(
        members[0].api,
        "PUT",
        "/api/v1/budgets/dataset:federation",
        &admins[0],
        json!({ "epsilon": 50.0 }),
    )
    .await;
    let r = call(
        members[0].api,
        "POST",
        "/api/v1/researchers",
        &admins[0],
        json!({ "username": "alice", "epsilon_budget": 5.0 }),
    )
    .await;
    // All three (the dataset's budget, alice's registration and her budget) loosen a privacy
    // limit: pending until t = 2 members post them; b approves.
    let approved = client::approve_pending(members[1].api, &admins[1], 3, Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(approved, 3);
    let alice = client::first_login(
        members[0].api,
        "alice",
        r["password"].as_str().unwrap(),
        "alice's own password",
    )
    .await
    .unwrap();

    // Submitted at b, read at c: all three hospitals contribute; the noisy count is near 600.
    let q = count_query(members[1].api, &alice, members[2].api).await;
    let value = q["result"]["result"]["Count"]["value"].as_i64().unwrap();
    assert!((value - 600).abs() < 50, "{q}");
    assert_eq!(
        q["result"]["contributors"].as_array().unwrap().len(),
        3,
        "{q}"
    );

    // Member c dies (n − t = 1 may): the next query goes on without its data.
    members[2].kill9();
    let q = count_query(members[0].api, &alice, members[0].api).await;
    let contributors: Vec<&str> = q["result"]["contributors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(contributors, ["hospital-a", "hospital-b"], "{q}");
    let value = q["result"]["result"]["Count"]["value"].as_i64().unwrap();
    assert!((value - 400).abs() < 50, "{q}");

    // Restarted from its disk, c catches up to the others' ledger.
    members[2].start();
    wait_ready(members[2].api, Duration::from_secs(60), &members[2].log).await;
    let aud = |m: &Member, token: String| {
        let addr = m.api;
        async move { call(addr, "GET", "/api/v1/ledger/head", &token, Value::Null).await }
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let a = aud(&members[0], admins[0].clone()).await;
        let c = aud(&members[2], admins[0].clone()).await;
        if a["size"] == c["size"] && a["root"] == c["root"] {
            break;
        }
        assert!(Instant::now() < deadline, "c did not catch up: {a} vs {c}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // The export an auditor downloads verifies with the offline verifier.
    let r = client::request(
        members[2].api,
        "GET",
        "/api/v1/ledger/export",
        Some(&admins[0]),
        None,
        b"",
    )
    .await
    .unwrap();
    assert_eq!(r.status, 200);
    let export = tmp.path().join("export.json");
    std::fs::write(&export, &r.body).unwrap();
    let v = Command::new(BIN)
        .args(["ledger", "verify"])
        .arg(&export)
        .output()
        .unwrap();
    assert!(v.status.success(), "{}", String::from_utf8_lossy(&v.stdout));

    // A channel admin registers the committee's checkpoint keys with the chaincode (until
    // then it refuses the leader's anchors, which retry); then the leader anchors the
    // committee's cosigned checkpoints on the channel.
    let exported: medtech_ledger::export::LedgerExport = serde_json::from_slice(&r.body).unwrap();
    let keys = CommitteeKeys {
        threshold: exported.threshold,
        members: exported
            .committee
            .iter()
            .map(|m| CommitteeMember {
                name: m.name.clone(),
                key: m.public_key.clone(),
            })
            .collect(),
    };
    let (admin_cert, admin_key) = issue_admin_identity("Hospital1MSP", "channel-admin").unwrap();
    gateway.enroll("Hospital1MSP", &admin_cert);
    let channel_admin = GatewayClient::connect_lazy(
        &GatewayEndpoint {
            address: running_gateway.addr.to_string(),
            tls_ca_pem: Some(running_gateway.ca_pem.clone()),
            server_name: Some(running_gateway.server_name.clone()),
            client_tls: None,
            commit_timeout: Duration::from_secs(10),
        },
        MspIdentity::from_pem("Hospital1MSP", &admin_cert, &admin_key).unwrap(),
        "medtech",
        DEFAULT_CHAINCODE,
    )
    .unwrap();
    channel_admin
        .submit(
            REGISTER,
            &[
                exported.origin.as_bytes(),
                &serde_json::to_vec(&keys).unwrap(),
            ],
        )
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(40);
    while !gateway
        .world_state()
        .keys()
        .any(|k| k.starts_with("\u{0}medtech.checkpoint\u{0}"))
    {
        assert!(
            Instant::now() < deadline,
            "no checkpoint anchored on Fabric (gateway refused {})",
            gateway.refused()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(gateway.blocks() >= 2, "the registration and an anchor");
    assert_eq!(gateway.refused(), 0);

    // SIGTERM stops every member cleanly.
    for m in &mut members {
        let s = m.terminate().unwrap();
        assert!(s.success(), "{} exited with {s}", m.name);
    }

    // No secret reached a log: passwords, signing keys, share keys, TLS keys, tokens.
    let mut secrets = vec![alice.clone(), key.lines().nth(1).unwrap().to_owned()];
    secrets.extend(admins.iter().cloned());
    for m in &members {
        secrets.push(m.admin_password(&dir));
        let home = dir.join(&m.name);
        secrets.push(
            std::fs::read_to_string(home.join("keys/node.key"))
                .unwrap()
                .trim()
                .to_owned(),
        );
        secrets.push(
            std::fs::read_to_string(home.join("keys/share.key"))
                .unwrap()
                .trim()
                .to_owned(),
        );
        let key_pem = std::fs::read_to_string(home.join("tls/key.pem")).unwrap();
        secrets.push(key_pem.lines().nth(1).unwrap().to_owned());
    }
    for m in &members {
        let log = std::fs::read_to_string(&m.log).unwrap();
        assert!(log.contains("member running"), "{}: {log}", m.name);
        for s in &secrets {
            assert!(!log.contains(s.as_str()), "{}'s log holds a secret", m.name);
        }
    }
}
