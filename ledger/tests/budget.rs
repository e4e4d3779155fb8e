//! Budgets are charged by the ledger entry that admits a query: a query that does not fit is
//! rejected, two queries racing for the last of a budget cannot both get in, and a charge
//! cannot be declared in a form the state machine does not understand.
#![allow(clippy::unwrap_used, clippy::expect_used)]

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
        let mut rng = ChaCha20Rng::seed_from_u64(7);
        let node = NodeKey::generate("h1", &mut rng);
        let committee = CommitteeConfig::new(vec![node.identity()], 1, 0);
        Fixture {
            state: LedgerState::new(ORIGIN, committee).unwrap(),
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
    assert_eq!(g.state.budgets(), f.state.budgets());
}
