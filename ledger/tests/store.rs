//! Durable storage: sled round trips, agreement with the in-memory model, and crash safety
//! (a writer killed with SIGKILL mid-append loses no acknowledged entry).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};

use medtech_ledger::backend::Backend;
use medtech_ledger::merkle::MerkleLog;
use medtech_ledger::store::{DurableLog, EntryStore, MemStore, RaftLogBackend, SledStore};
use proptest::prelude::*;

fn entry(i: u64) -> Vec<u8> {
    let mut e = format!("entry {i} ").into_bytes();
    e.resize(200 + (i % 50) as usize, b'x');
    e
}

#[test]
fn sled_store_round_trips_across_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let root_before;
    {
        let mut log = DurableLog::open(SledStore::open(dir.path()).unwrap()).unwrap();
        for chunk in (0..300u64).collect::<Vec<_>>().chunks(37) {
            let batch: Vec<Vec<u8>> = chunk.iter().map(|&i| entry(i)).collect();
            log.append(&batch).unwrap();
        }
        root_before = log.root();
    }
    let mut store = SledStore::open(dir.path()).unwrap();
    assert_eq!(store.len(), 300);
    assert_eq!(store.get(123).unwrap(), entry(123));
    assert!(store.get(300).is_err());
    store.put_meta("vote", b"term 7").unwrap();
    store.truncate(250).unwrap();
    drop(store);
    let store = SledStore::open(dir.path()).unwrap();
    assert_eq!(store.len(), 250);
    assert_eq!(
        store.get_meta("vote").unwrap().as_deref(),
        Some(&b"term 7"[..])
    );
    assert!(store.get_meta("absent").unwrap().is_none());
    let log = DurableLog::open(store).unwrap();
    let mut expected = MerkleLog::new();
    for i in 0..250 {
        expected.append(&entry(i));
    }
    assert_eq!(log.root(), expected.root());
    assert_ne!(log.root(), root_before);
}

#[derive(Debug, Clone)]
enum Op {
    Append(Vec<u8>),
    AppendWithMeta(Vec<u8>, u8),
    Truncate(u8),
    Meta(u8, u8),
}

fn store_matches_model(backend: Backend, ops: &[Op]) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, _) = backend.open(dir.path()).unwrap();
    let mut mem = MemStore::default();
    for op in ops {
        match op {
            Op::Append(e) => {
                store.append(std::slice::from_ref(e)).unwrap();
                mem.append(std::slice::from_ref(e)).unwrap();
            }
            Op::AppendWithMeta(e, v) => {
                let meta = [("applied", vec![*v])];
                store
                    .append_with_meta(std::slice::from_ref(e), &meta)
                    .unwrap();
                mem.append_with_meta(std::slice::from_ref(e), &meta)
                    .unwrap();
            }
            Op::Truncate(n) => {
                let n = u64::from(*n) % (mem.len() + 1);
                store.truncate(n).unwrap();
                mem.truncate(n).unwrap();
            }
            Op::Meta(k, v) => {
                store.put_meta(&k.to_string(), &[*v]).unwrap();
                mem.put_meta(&k.to_string(), &[*v]).unwrap();
            }
        }
    }
    drop(store);
    let (store, _) = backend.open(dir.path()).unwrap();
    prop_assert_eq!(store.len(), mem.len());
    for i in 0..mem.len() {
        prop_assert_eq!(store.get(i).unwrap(), mem.get(i).unwrap());
    }
    for k in ["0", "1", "2", "3", "applied"] {
        prop_assert_eq!(store.get_meta(k).unwrap(), mem.get_meta(k).unwrap());
    }
    Ok(())
}

#[derive(Debug, Clone)]
enum LogOp {
    Append(u8, u8),
    TruncateFrom(u8),
    PurgeUpto(u8),
    PurgeWithMark(u8),
}

/// The Raft log backends against a map: append (overwrite) runs, truncate a suffix, purge a
/// prefix; ranges and the last entry agree, also after reopening.
fn raft_log_matches_model(backend: Backend, ops: &[LogOp]) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().unwrap();
    let (_, log) = backend.open(dir.path()).unwrap();
    let mut model = std::collections::BTreeMap::<u64, Vec<u8>>::new();
    let mut mark = None;
    for op in ops {
        match op {
            LogOp::Append(at, n) => {
                let batch: Vec<(u64, Vec<u8>)> = (0..u64::from(*n % 8))
                    .map(|k| (u64::from(*at) + k, vec![*at, k as u8]))
                    .collect();
                log.append(&batch).unwrap();
                model.extend(batch);
            }
            LogOp::TruncateFrom(i) => {
                log.truncate_from(u64::from(*i)).unwrap();
                model.retain(|k, _| *k < u64::from(*i));
            }
            LogOp::PurgeUpto(i) => {
                log.purge_upto(u64::from(*i)).unwrap();
                model.retain(|k, _| *k > u64::from(*i));
            }
            LogOp::PurgeWithMark(i) => {
                log.purge_with_mark("purged", &[*i], u64::from(*i)).unwrap();
                model.retain(|k, _| *k > u64::from(*i));
                mark = Some(vec![*i]);
                prop_assert_eq!(log.get_meta("purged").unwrap(), mark.clone());
            }
        }
    }
    log.put_meta("vote", b"v").unwrap();
    drop(log);
    let (_, log) = backend.open(dir.path()).unwrap();
    let all: Vec<Vec<u8>> = model.values().cloned().collect();
    prop_assert_eq!(log.range(0, u64::MAX).unwrap(), all);
    prop_assert_eq!(log.last().unwrap(), model.values().next_back().cloned());
    let mid: Vec<Vec<u8>> = model.range(10..20).map(|(_, v)| v.clone()).collect();
    prop_assert_eq!(log.range(10, 20).unwrap(), mid);
    prop_assert_eq!(log.get_meta("vote").unwrap(), Some(b"v".to_vec()));
    // A purge without an fsync of its own is durable after the next durable write.
    prop_assert_eq!(log.get_meta("purged").unwrap(), mark);
    Ok(())
}

fn ops() -> impl Strategy<Value = Vec<Op>> {
    proptest::collection::vec(
        prop_oneof![
            4 => proptest::collection::vec(any::<u8>(), 0..40).prop_map(Op::Append),
            2 => (proptest::collection::vec(any::<u8>(), 0..40), any::<u8>())
                .prop_map(|(e, v)| Op::AppendWithMeta(e, v)),
            1 => any::<u8>().prop_map(Op::Truncate),
            1 => (0u8..4, any::<u8>()).prop_map(|(k, v)| Op::Meta(k, v)),
        ],
        1..40,
    )
}

fn log_ops() -> impl Strategy<Value = Vec<LogOp>> {
    proptest::collection::vec(
        prop_oneof![
            4 => (0u8..40, any::<u8>()).prop_map(|(a, n)| LogOp::Append(a, n)),
            1 => (0u8..48).prop_map(LogOp::TruncateFrom),
            1 => (0u8..48).prop_map(LogOp::PurgeUpto),
            1 => (0u8..48).prop_map(LogOp::PurgeWithMark),
        ],
        1..30,
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, .. ProptestConfig::default() })]

    /// sled and the in-memory model agree on every sequence of operations, and after reopening.
    #[test]
    fn sled_store_matches_the_in_memory_model(ops in ops()) {
        store_matches_model(Backend::Sled, &ops)?;
    }

    /// redb and the in-memory model agree on every sequence of operations, and after reopening.
    #[test]
    fn redb_store_matches_the_in_memory_model(ops in ops()) {
        store_matches_model(Backend::Redb, &ops)?;
    }

    #[test]
    fn sled_raft_log_matches_a_map(ops in log_ops()) {
        raft_log_matches_model(Backend::Sled, &ops)?;
    }

    #[test]
    fn redb_raft_log_matches_a_map(ops in log_ops()) {
        raft_log_matches_model(Backend::Redb, &ops)?;
    }
}

const CHILD_ENV: &str = "MEDTECH_LEDGER_CRASH_CHILD_DIR";

/// The writer process of the crash test: appends batches forever, printing `ack <len>` after
/// each batch is durable. Run only by `acknowledged_entries_survive_sigkill`.
#[test]
#[ignore = "helper process for the crash test"]
fn crash_writer_child() {
    let Ok(dir) = std::env::var(CHILD_ENV) else {
        return;
    };
    let mut log = DurableLog::open(SledStore::open(std::path::Path::new(&dir)).unwrap()).unwrap();
    let mut out = std::io::stdout();
    let mut next = log.tree().size();
    loop {
        let batch: Vec<Vec<u8>> = (next..next + 8).map(entry).collect();
        let len = log.append(&batch).unwrap();
        next = len;
        writeln!(out, "ack {len}").unwrap();
        out.flush().unwrap();
    }
}

#[test]
fn acknowledged_entries_survive_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let mut acked = 0u64;
    for round in 0..3 {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--ignored",
                "--exact",
                "crash_writer_child",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        let target = acked + 200 + 57 * round;
        while let Some(Ok(line)) = lines.next() {
            if let Some(n) = line.strip_prefix("ack ") {
                acked = n.trim().parse().unwrap();
                if acked >= target {
                    break;
                }
            }
        }
        assert!(
            acked >= target,
            "round {round}: the writer acknowledged only {acked} of {target}"
        );
        child.kill().unwrap(); // SIGKILL on Unix: no destructors, no flush.
        child.wait().unwrap();
        let log = DurableLog::open(SledStore::open(dir.path()).unwrap()).unwrap();
        let size = log.tree().size();
        assert!(
            size >= acked,
            "round {round}: {size} entries on disk, {acked} acknowledged"
        );
        for i in 0..size {
            assert_eq!(
                log.store().get(i).unwrap(),
                entry(i),
                "entry {i} after round {round}"
            );
        }
        let mut expected = MerkleLog::new();
        for i in 0..size {
            expected.append(&entry(i));
        }
        assert_eq!(
            log.root(),
            expected.root(),
            "tree consistent after round {round}"
        );
        acked = size;
    }
}
