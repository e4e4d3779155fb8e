//! Crash safety of a ledger node: a member killed with SIGKILL while appending restarts with
//! every acknowledged entry and a consistent tree. Multi-process: the test runs a one-member
//! committee in a child process (this same test binary), kills it, and checks the disk.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};

use medtech_ledger::backend::Backend;
use medtech_ledger::checkpoint::NodeKey;
use medtech_ledger::entry::{Kind, ParsedEntry};
use medtech_ledger::merkle::MerkleLog;
use medtech_ledger::raft::node::{LedgerNode, NodeConfig, RaftTuning};
use medtech_ledger::raft::CommitteeNode;
use medtech_ledger::state::CommitteeConfig;
use medtech_ledger::tls::CommitteeCa;
use medtech_protos::ledger::v1 as pb;

const CHILD_ENV: &str = "MEDTECH_RAFT_CRASH_DIR";
const ORIGIN: &str = "medtech.test/crash";

fn key() -> NodeKey {
    NodeKey::from_secret_bytes("hospital-a", &[7u8; 32])
}

fn genesis() -> CommitteeConfig {
    CommitteeConfig::new(vec![key().identity()], 1, 0)
}

fn text(i: u64) -> String {
    format!("entry {i} {}", "x".repeat((i % 97) as usize))
}

async fn config(dir: &std::path::Path) -> (NodeConfig, tokio::net::TcpListener) {
    let ca = CommitteeCa::generate("ca").unwrap();
    let tls = ca.issue("hospital-a").unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let members = BTreeMap::from([(
        1,
        CommitteeNode {
            name: "hospital-a".into(),
            addr: listener.local_addr().unwrap().to_string(),
            cert_sha256: tls.cert_sha256.clone(),
        },
    )]);
    let cfg = NodeConfig {
        id: 1,
        key: key(),
        tls,
        data_dir: dir.into(),
        origin: ORIGIN.into(),
        genesis: genesis(),
        members,
        raft: RaftTuning {
            snapshot_every: 50,
            keep_after_snapshot: 10,
            ..RaftTuning::default()
        },
        cosign_every: None,
        state_spill: true,
        backend: Backend::default(),
        faults: Default::default(),
        rules: None,
    };
    (cfg, listener)
}

/// The child: a one-member committee appending notes forever, printing `ack <seq>` once each
/// is committed and applied.
#[test]
#[ignore = "helper process for the crash test"]
fn raft_crash_writer_child() {
    let Ok(dir) = std::env::var(CHILD_ENV) else {
        return;
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async move {
        let (cfg, listener) = config(std::path::Path::new(&dir)).await;
        let node = LedgerNode::start(cfg, listener).await.unwrap();
        let _ = node.initialize().await; // refused after the first run: already initialized
        let mut out = std::io::stdout();
        let mut next = node.head().unwrap().0;
        loop {
            let r = node
                .propose_own(Kind::Note(pb::Note { text: text(next) }))
                .await
                .unwrap();
            let seq = r.sequence.expect("accepted");
            assert_eq!(seq, next);
            next += 1;
            writeln!(out, "ack {seq}").unwrap();
            out.flush().unwrap();
        }
    });
}

#[test]
fn acknowledged_entries_survive_sigkill_of_a_ledger_node() {
    let dir = tempfile::tempdir().unwrap();
    let mut acked: Option<u64> = None;
    for round in 0..3u64 {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--ignored",
                "--exact",
                "raft_crash_writer_child",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let target = acked.map_or(0, |a| a + 1) + 60 + 17 * round;
        while let Some(Ok(line)) = lines.next() {
            if let Some(n) = line.strip_prefix("ack ") {
                let n: u64 = n.trim().parse().unwrap();
                acked = Some(n);
                if n >= target {
                    break;
                }
            }
        }
        let acked_now = acked.expect("the child acknowledged nothing");
        assert!(
            acked_now >= target,
            "round {round}: only {acked_now} acknowledged"
        );
        eprintln!("round {round}: killing after ack {acked_now}");
        child.kill().unwrap(); // SIGKILL: no destructors, no flush
        child.wait().unwrap();

        // Restart the member from its disk: the state machine may lag its durable Raft log
        // (lazy writes); Raft applies the rest on start.
        let rt = tokio::runtime::Runtime::new().unwrap();
        let size = rt.block_on(async {
            let (cfg, listener) = config(dir.path()).await;
            let node = LedgerNode::start(cfg, listener).await.unwrap();
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
            while node.head().unwrap().0 <= acked_now {
                assert!(
                    std::time::Instant::now() < deadline,
                    "round {round}: {} entries after restart, {acked_now} acknowledged",
                    node.head().unwrap().0
                );
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
            let size = {
                let l = node.read().unwrap();
                let size = l.log().tree().size();
                let mut expected = MerkleLog::new();
                for i in 0..size {
                    let b = l.log().get(i).unwrap();
                    let e = ParsedEntry::decode(&b).unwrap();
                    assert_eq!(e.body.author_seq, i + 1);
                    match e.kind() {
                        Some(Kind::Note(n)) => assert_eq!(n.text, text(i), "entry {i}"),
                        other => panic!("entry {i} is {other:?}"),
                    }
                    expected.append(&b);
                }
                assert_eq!(l.log().root(), expected.root(), "round {round}");
                size
            };
            node.shutdown().await.unwrap();
            size
        });
        eprintln!("round {round}: {size} entries after restart");
        acked = Some(size - 1);
    }
}
