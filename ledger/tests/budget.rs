//! Budgets are charged by the ledger entry that admits a query: a query that does not fit is
//! rejected, two queries racing for the last of a budget cannot both get in, and a charge
//! cannot be declared in a form the state machine does not understand.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use medtech_ledger::book::Spill;
use medtech_ledger::budget::{encode_limit, QueryCharge};
use medtech_ledger::checkpoint::NodeKey;
use medtech_ledger::entry::{sign_entry, EntrySigner, Kind, ResearcherKey};
use medtech_ledger::merkle::MerkleLog;
use medtech_ledger::state::{CommitteeConfig, LedgerState, Verify};
use medtech_noise::{Cost, Micros, Subject};
use medtech_protos::ledger::v1 as pb;
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

const ORIGIN: &str = "medtech.test/budget";

fn eps(micros: u64) -> Cost {
    Cost {
        epsilon: Micros(micros),
        ..Cost::default()
    }
}

struct Fixture {
    state: LedgerState,
    tree: MerkleLog,
    node: NodeKey,
    node_seq: u64,
}

impl Fixture {
    fn new() -> Self {
        Self::with_state(|c| LedgerState::new(ORIGIN, c).unwrap())
    }

    /// A fixture whose state keeps at most `hot` records per book in memory, the rest in `path`.
    fn spilled(path: &std::path::Path, hot: usize) -> Self {
        let spill = Spill::create(path).unwrap();
        Self::with_state(|c| LedgerState::with_spill(ORIGIN, c, spill, hot).unwrap())
    }

    fn with_state(state: impl FnOnce(CommitteeConfig) -> LedgerState) -> Self {
        let mut rng = ChaCha20Rng::seed_from_u64(7);
        let node = NodeKey::generate("h1", &mut rng);
        let committee = CommitteeConfig::new(vec![node.identity()], 1, 0);
        Fixture {
            state: state(committee),
            tree: MerkleLog::new(),
            node,
            node_seq: 0,
        }
    }

    fn submit(&mut self, bytes: Vec<u8>) -> Result<(), String> {
        let e = self
            .state
            .check(&bytes, &self.tree, Verify::Signatures)
            .map_err(|r| r.reason)?;
        self.state.apply(&e, self.tree.size());
        self.tree.append(&bytes);
        Ok(())
    }

    fn as_node(&mut self, kind: Kind) -> Result<(), String> {
        self.node_seq += 1;
        let bytes = sign_entry(&self.node, ORIGIN, self.node_seq, 0, kind);
        let r = self.submit(bytes);
        if r.is_err() {
            self.node_seq -= 1;
        }
        r
    }

    fn limit(&mut self, subject: &str, micros: u64) {
        self.as_node(Kind::SetBudget(pb::SetBudget {
            subject: subject.into(),
            limit: encode_limit(&eps(micros)),
        }))
        .unwrap();
    }

    fn register(&mut self, r: &ResearcherKey) {
        self.as_node(Kind::RegisterResearcher(pb::RegisterResearcher {
            researcher_id: r.id().into(),
            display_name: String::new(),
            public_key: r.public_key().as_bytes().to_vec(),
        }))
        .unwrap();
    }
}

fn query(r: &impl EntrySigner, seq: u64, id: &str, cost: Vec<u8>) -> Vec<u8> {
    sign_entry(
        r,
        ORIGIN,
        seq,
        0,
        Kind::SubmitQuery(pb::SubmitQuery {
            query_id: id.into(),
            query: b"{}".to_vec(),
            cost,
            on_behalf_of: String::new(),
            idempotency_key: String::new(),
        }),
    )
}

fn charge(micros: u64) -> Vec<u8> {
    QueryCharge {
        dataset: "federation".into(),
        cost: eps(micros),
    }
    .encode()
}

#[test]
fn over_budget_query_is_rejected_and_spends_nothing() {
    let mut f = Fixture::new();
    let r = ResearcherKey::generate("r1", &mut ChaCha20Rng::seed_from_u64(1));
    f.register(&r);
    f.limit("researcher:r1", 1_000_000);
    f.limit("dataset:federation", 10_000_000);
    f.submit(query(&r, 1, "q1", charge(600_000))).unwrap();
    let err = f.submit(query(&r, 2, "q2", charge(600_000))).unwrap_err();
    assert!(err.contains("over budget for researcher"), "{err}");
    let spent = f.state.budgets().spent(&Subject::Researcher("r1".into()));
    assert_eq!(spent, eps(600_000));
    assert!(f.state.query("q2").is_none());
    // What is left still fits.
    f.submit(query(&r, 2, "q2", charge(400_000))).unwrap();
    assert_eq!(
        f.state
            .budgets()
            .remaining(&Subject::Researcher("r1".into())),
        Some(eps(0))
    );
}

#[test]
fn two_researchers_racing_for_the_last_of_a_dataset_budget_cannot_both_get_in() {
    let mut f = Fixture::new();
    let a = ResearcherKey::generate("a", &mut ChaCha20Rng::seed_from_u64(2));
    let b = ResearcherKey::generate("b", &mut ChaCha20Rng::seed_from_u64(3));
    f.register(&a);
    f.register(&b);
    f.limit("researcher:a", 5_000_000);
    f.limit("researcher:b", 5_000_000);
    f.limit("dataset:federation", 1_000_000);
    // Both were prepared against the same state; the log orders them.
    let qa = query(&a, 1, "qa", charge(700_000));
    let qb = query(&b, 1, "qb", charge(700_000));
    f.submit(qa).unwrap();
    let err = f.submit(qb).unwrap_err();
    assert!(err.contains("over budget for dataset"), "{err}");
}

#[test]
fn a_query_without_a_budget_or_with_an_undecodable_cost_is_rejected() {
    let mut f = Fixture::new();
    let r = ResearcherKey::generate("r1", &mut ChaCha20Rng::seed_from_u64(1));
    f.register(&r);
    let err = f.submit(query(&r, 1, "q1", charge(1))).unwrap_err();
    assert!(err.contains("no budget is set"), "{err}");
    f.limit("researcher:r1", 1_000_000);
    f.limit("dataset:federation", 1_000_000);
    for bad in [
        vec![],
        b"not json".to_vec(),
        b"{\"dataset\":\"\",\"cost\":{\"epsilon\":1,\"rho\":0,\"delta\":0}}".to_vec(),
    ] {
        assert!(f.submit(query(&r, 1, "q1", bad)).is_err());
    }
    f.submit(query(&r, 1, "q1", charge(1))).unwrap();
    // A malformed limit is refused too.
    let err = f
        .as_node(Kind::SetBudget(pb::SetBudget {
            subject: "researcher:r1".into(),
            limit: b"-1".to_vec(),
        }))
        .unwrap_err();
    assert!(err.contains("limit does not decode"), "{err}");
    let err = f
        .as_node(Kind::SetBudget(pb::SetBudget {
            subject: "hospital:x".into(),
            limit: encode_limit(&eps(1)),
        }))
        .unwrap_err();
    assert!(err.contains("budget subject"), "{err}");
}

#[test]
fn replaying_the_log_rebuilds_the_same_budgets() {
    let mut f = Fixture::new();
    let r = ResearcherKey::generate("r1", &mut ChaCha20Rng::seed_from_u64(1));
    f.register(&r);
    f.limit("researcher:r1", 3_000_000);
    f.limit("dataset:federation", 3_000_000);
    let mut entries = Vec::new();
    for i in 1..=4u64 {
        let q = query(&r, i, &format!("q{i}"), charge(1_000_000));
        entries.push(q.clone());
        let _ = f.submit(q);
    }
    // Rebuild from the accepted entries alone.
    let mut g = Fixture::new();
    let mut seq = 0;
    for (i, kind) in [0u64, 1, 2].iter().zip([
        Kind::RegisterResearcher(pb::RegisterResearcher {
            researcher_id: "r1".into(),
            display_name: String::new(),
            public_key: r.public_key().as_bytes().to_vec(),
        }),
        Kind::SetBudget(pb::SetBudget {
            subject: "researcher:r1".into(),
            limit: encode_limit(&eps(3_000_000)),
        }),
        Kind::SetBudget(pb::SetBudget {
            subject: "dataset:federation".into(),
            limit: encode_limit(&eps(3_000_000)),
        }),
    ]) {
        seq += 1;
        let bytes = sign_entry(&g.node, ORIGIN, seq, 0, kind);
        g.state.replay(&bytes, *i).unwrap();
    }
    g.node_seq = seq;
    for (i, q) in entries.iter().take(3).enumerate() {
        g.state.replay(q, 3 + i as u64).unwrap();
    }
    for s in subjects() {
        assert_eq!(g.state.budgets().spent(&s), f.state.budgets().spent(&s));
        assert_eq!(g.state.budgets().limit(&s), f.state.budgets().limit(&s));
    }
    for i in 1..=4 {
        let q = format!("q{i}");
        assert_eq!(g.state.query(&q), f.state.query(&q), "{q}");
    }
}

fn subjects() -> [Subject; 3] {
    [
        Subject::Researcher("r1".into()),
        Subject::Dataset("federation".into()),
        Subject::Global,
    ]
}

/// Queries admitted, refused, run to release and refused again after it, with every
/// decision returned in order.
fn protocol_script(f: &mut Fixture, r: &ResearcherKey) -> Vec<Result<(), String>> {
    f.register(r);
    f.limit("researcher:r1", 10_000_000);
    f.limit("dataset:federation", 10_000_000);
    let mut out = Vec::new();
    let mut rseq = 0;
    let mut submit = |f: &mut Fixture, id: &str, micros: u64, out: &mut Vec<_>| {
        rseq += 1;
        let res = f.submit(query(r, rseq, id, charge(micros)));
        if res.is_err() {
            rseq -= 1;
        }
        out.push(res);
    };
    for i in 0..12 {
        submit(f, &format!("q{i}"), 500_000, &mut out);
    }
    submit(f, "q3", 1, &mut out); // an id used twice
    submit(f, "big", 5_000_000, &mut out); // 6 of 10 spent: over budget
    submit(f, "fits", 4_000_000, &mut out);
    for i in (0..12).step_by(2) {
        let id = format!("q{i}");
        let contribution = || {
            Kind::Contribution(pb::Contribution {
                query_id: id.clone(),
                ..Default::default()
            })
        };
        let partial = || {
            Kind::PartialDecryption(pb::PartialDecryption {
                query_id: id.clone(),
                ..Default::default()
            })
        };
        for kind in [
            partial(), // nothing closed yet
            contribution(),
            contribution(), // twice
            Kind::NoiseCommitment(pb::NoiseCommitment {
                query_id: id.clone(),
                ..Default::default()
            }),
            Kind::CloseAggregate(pb::CloseAggregate {
                query_id: id.clone(),
                contributors: vec!["h1".into()],
                noise_from: vec!["h1".into()],
            }),
            contribution(), // after the close
            partial(),
            partial(), // twice
            Kind::ReleaseResult(pb::ReleaseResult {
                query_id: id.clone(),
                result: b"{}".to_vec(),
            }),
            partial(), // after the release
        ] {
            out.push(f.as_node(kind));
        }
    }
    out.push(f.as_node(Kind::Contribution(pb::Contribution {
        query_id: "never-submitted".into(),
        ..Default::default()
    })));
    out
}

#[test]
fn a_node_whose_query_records_spill_to_disk_decides_every_entry_as_one_holding_them_in_memory() {
    let r = ResearcherKey::generate("r1", &mut ChaCha20Rng::seed_from_u64(1));
    let dir = tempfile::tempdir().unwrap();
    let mut mem = Fixture::new();
    // Two records per book in memory: almost every lookup goes to the file.
    let mut disk = Fixture::spilled(&dir.path().join("spill.redb"), 2);
    let expected = protocol_script(&mut mem, &r);
    let got = protocol_script(&mut disk, &r);
    assert_eq!(got, expected);
    assert!(expected.iter().filter(|d| d.is_err()).count() >= 30);
    assert_eq!(disk.state.storage_fault(), None);
    assert_eq!(disk.tree.root(), mem.tree.root());
    for id in (0..12)
        .map(|i| format!("q{i}"))
        .chain(["big".into(), "fits".into()])
    {
        assert_eq!(disk.state.query(&id), mem.state.query(&id), "{id}");
        assert_eq!(
            disk.state.budgets().noise_posted(&id),
            mem.state.budgets().noise_posted(&id),
            "{id}"
        );
    }
    for s in subjects() {
        assert_eq!(
            disk.state.budgets().spent(&s),
            mem.state.budgets().spent(&s)
        );
    }
    assert_eq!(
        mem.state.budgets().spent(&subjects()[0]),
        eps(10_000_000),
        "twelve half-ε queries and one of 4"
    );
}
