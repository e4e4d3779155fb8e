//! The Fabric connector against the in-process gateway (TLS on loopback): anchoring, reading
//! back, equivocation, and every signature the gateway checks on the exact bytes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use medtech_ledger::checkpoint::NodeIdentity;
use medtech_ledger::checkpoint::{Checkpoint, NodeKey, SignedCheckpoint};
use medtech_ledger::fabric::contract::{
    checkpoint_key, CommitteeKeys, ContractConfig, DEFAULT_CHAINCODE, REGISTER,
};
use medtech_ledger::fabric::sim::{
    issue_admin_identity, issue_identity, Misbehaviour, RunningGateway, SimulatedGateway,
};
use medtech_ledger::fabric::transaction::{Invocation, ProposedTransaction};
use medtech_ledger::fabric::{
    AnchorOutcome, Anchorer, FabricError, GatewayClient, GatewayEndpoint, MspIdentity,
};
use medtech_ledger::merkle::Hash;
use medtech_protos::fabric as pb;
use medtech_protos::fabric::gateway_client::GatewayClient as RawClient;
use medtech_protos::Message as _;

use common::{fast_tuning, note, Cluster};

const CHANNEL: &str = "medtech";

fn identity(name: &str) -> MspIdentity {
    let (c, k) = issue_identity("Hospital1MSP", name).unwrap();
    MspIdentity::from_pem("Hospital1MSP", &c, &k).unwrap()
}

/// A gateway whose chaincode has the test committee of [`cosigned`] registered (t = 2), in
/// block 1.
async fn gateway() -> (SimulatedGateway, RunningGateway, MspIdentity) {
    let (sim, running, id) = bare_gateway().await;
    let (_, keys) = cosigned(1, 1);
    let members: Vec<_> = keys.iter().map(NodeKey::identity).collect();
    register(&sim, &running, "medtech.test/committee", &members, 2).await;
    (sim, running, id)
}

/// A gateway whose chaincode has no committee registered.
async fn bare_gateway() -> (SimulatedGateway, RunningGateway, MspIdentity) {
    let sim = SimulatedGateway::new(CHANNEL, DEFAULT_CHAINCODE).unwrap();
    sim.configure(ContractConfig {
        admin_msps: vec!["Hospital1MSP".into()],
        writer_msps: Vec::new(),
    });
    let id = identity("anchor-client");
    sim.enroll(id.msp_id(), id.cert_pem());
    let running = sim.serve().await.unwrap();
    (sim, running, id)
}

/// A channel admin registers `members` as the committee of `origin`.
async fn register(
    sim: &SimulatedGateway,
    g: &RunningGateway,
    origin: &str,
    members: &[NodeIdentity],
    t: usize,
) {
    let (c, k) = issue_admin_identity("Hospital1MSP", "channel-admin").unwrap();
    let admin = MspIdentity::from_pem("Hospital1MSP", &c, &k).unwrap();
    sim.enroll(admin.msp_id(), admin.cert_pem());
    let keys = serde_json::to_vec(&CommitteeKeys::new(t, members)).unwrap();
    client(g, admin)
        .submit(REGISTER, &[origin.as_bytes(), &keys])
        .await
        .unwrap();
}

/// For first anchors, which need no consistency proof.
fn no_proof(_: u64, _: u64) -> Option<Vec<Hash>> {
    None
}

fn endpoint(g: &RunningGateway) -> GatewayEndpoint {
    GatewayEndpoint {
        address: g.addr.to_string(),
        tls_ca_pem: Some(g.ca_pem.clone()),
        server_name: Some(g.server_name.clone()),
        client_tls: None,
        commit_timeout: Duration::from_secs(5),
    }
}

fn client(g: &RunningGateway, id: MspIdentity) -> GatewayClient {
    GatewayClient::connect_lazy(&endpoint(g), id, CHANNEL, DEFAULT_CHAINCODE).unwrap()
}

async fn raw(g: &RunningGateway) -> RawClient<tonic::transport::Channel> {
    let tls = tonic::transport::ClientTlsConfig::new()
        .ca_certificate(tonic::transport::Certificate::from_pem(&g.ca_pem))
        .domain_name(g.server_name.clone());
    let ch = tonic::transport::Endpoint::from_shared(format!("https://{}", g.addr))
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect()
        .await
        .unwrap();
    RawClient::new(ch)
}

fn cosigned(size: u64, root: u8) -> (SignedCheckpoint, Vec<NodeKey>) {
    let keys: Vec<NodeKey> = (1..=3u8)
        .map(|i| NodeKey::from_secret_bytes(&format!("member-{i}"), &[i; 32]))
        .collect();
    let mut cp = SignedCheckpoint::new(Checkpoint {
        origin: "medtech.test/committee".into(),
        size,
        root: [root; 32],
    });
    for k in &keys[..2] {
        cp.sign(k);
    }
    (cp, keys)
}

fn anchor_invocation(note: &str) -> Invocation {
    Invocation {
        channel: CHANNEL.into(),
        chaincode: DEFAULT_CHAINCODE.into(),
        function: "AnchorCheckpoint".into(),
        args: vec![note.as_bytes().to_vec()],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cosigned_checkpoint_is_anchored_and_read_back() {
    let (sim, g, id) = gateway().await;
    let anchorer = Anchorer::new(client(&g, id));
    let (cp, keys) = cosigned(42, 7);
    let out = anchorer.anchor(&cp, &no_proof).await.unwrap();
    assert!(
        matches!(out, AnchorOutcome::Anchored { block: 2, .. }),
        "{out:?}"
    );
    assert!(sim
        .world_state()
        .contains_key(&checkpoint_key("medtech.test/committee", 42)));

    let back = anchorer
        .get("medtech.test/committee", Some(42))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(back, cp);
    let committee: Vec<_> = keys.iter().map(NodeKey::identity).collect();
    assert_eq!(back.verify_quorum(&committee, 2).unwrap().len(), 2);
    assert_eq!(
        anchorer.get("medtech.test/committee", None).await.unwrap(),
        Some(cp.clone())
    );
    assert_eq!(
        anchorer
            .get("medtech.test/committee", Some(41))
            .await
            .unwrap(),
        None
    );

    // Anchoring it again is a read, not a transaction.
    assert_eq!(
        anchorer.anchor(&cp, &no_proof).await.unwrap(),
        AnchorOutcome::AlreadyAnchored
    );
    assert_eq!(sim.blocks(), 2, "the registration and the anchor");
    assert_eq!(sim.refused(), 0);
    g.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn equivocating_checkpoint_is_caught_by_the_anchor() {
    let (_sim, g, id) = gateway().await;
    let anchorer = Anchorer::new(client(&g, id));
    let (a, _) = cosigned(10, 1);
    let (b, _) = cosigned(10, 2);
    anchorer.anchor(&a, &no_proof).await.unwrap();
    match anchorer.anchor(&b, &no_proof).await {
        Err(FabricError::Equivocation {
            size,
            anchored_note,
        }) => {
            assert_eq!(size, 10);
            assert_eq!(anchored_note, a.to_note());
        }
        other => panic!("expected equivocation, got {other:?}"),
    }
    // Even a client that skips the read cannot overwrite it: the chaincode refuses (409).
    let c = client(&g, identity_enrolled(&_sim, "second"));
    let err = c
        .submit("AnchorCheckpoint", &[b.to_note().as_bytes()])
        .await
        .unwrap_err();
    assert!(err.to_string().contains("409"), "{err}");
    g.shutdown().await;
}

fn identity_enrolled(sim: &SimulatedGateway, name: &str) -> MspIdentity {
    let id = identity(name);
    sim.enroll(id.msp_id(), id.cert_pem());
    id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identity_not_enrolled_in_the_msp_is_refused() {
    let (sim, g, _) = gateway().await;
    let stranger = Anchorer::new(client(&g, identity("stranger")));
    let (cp, _) = cosigned(3, 3);
    let err = stranger.anchor(&cp, &no_proof).await.unwrap_err();
    assert!(
        matches!(&err, FabricError::Transport(m) if m.contains("PermissionDenied")),
        "{err}"
    );
    assert_eq!(sim.blocks(), 1, "only the registration");
    g.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lying_gateway_gets_no_signature_on_a_swapped_transaction() {
    let (sim, g, id) = gateway().await;
    sim.misbehave(Misbehaviour::SwapArguments);
    let (cp, _) = cosigned(5, 5);
    let err = Anchorer::new(client(&g, id))
        .anchor(&cp, &no_proof)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, FabricError::Gateway(m) if m.contains("chaincode proposal payload")),
        "{err}"
    );
    assert_eq!(
        sim.blocks(),
        1,
        "nothing but the registration was submitted"
    );
    g.shutdown().await;
}

/// Drives the gateway by hand to check that it verifies each signature on the exact bytes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_checks_proposal_envelope_and_status_signatures_byte_for_byte() {
    let (sim, g, id) = gateway().await;
    let mut rpc = raw(&g).await;
    let (cp, _) = cosigned(8, 8);
    let mut rng = rand_core::OsRng;
    let p = ProposedTransaction::new(&id, &anchor_invocation(&cp.to_note()), 1, &mut rng);
    let endorse = |signed: pb::SignedProposal, tx: &str| pb::EndorseRequest {
        transaction_id: tx.to_owned(),
        channel_id: CHANNEL.into(),
        proposed_transaction: Some(signed),
        endorsing_organizations: vec![],
    };

    // A tampered proposal (one byte) no longer matches its signature.
    let mut tampered = p.signed.clone();
    let last = tampered.proposal_bytes.len() - 1;
    tampered.proposal_bytes[last] ^= 1;
    let s = rpc.endorse(endorse(tampered, &p.tx_id)).await.unwrap_err();
    assert_eq!(s.code(), tonic::Code::PermissionDenied, "{s:?}");

    // A signature by another key over the same bytes.
    let other = identity("other");
    let forged = pb::SignedProposal {
        proposal_bytes: p.signed.proposal_bytes.clone(),
        signature: other.sign(&p.signed.proposal_bytes),
    };
    let s = rpc.endorse(endorse(forged, &p.tx_id)).await.unwrap_err();
    assert_eq!(s.code(), tonic::Code::PermissionDenied, "{s:?}");

    // The request's transaction ID must be the proposal's.
    let s = rpc
        .endorse(endorse(p.signed.clone(), "beef"))
        .await
        .unwrap_err();
    assert_eq!(s.code(), tonic::Code::InvalidArgument, "{s:?}");

    // The genuine proposal is endorsed once; a replay is refused.
    let prepared = rpc
        .endorse(endorse(p.signed.clone(), &p.tx_id))
        .await
        .unwrap()
        .into_inner()
        .prepared_transaction
        .unwrap();
    let s = rpc
        .endorse(endorse(p.signed.clone(), &p.tx_id))
        .await
        .unwrap_err();
    assert_eq!(s.code(), tonic::Code::AlreadyExists, "{s:?}");
    p.check_prepared(&prepared).unwrap();

    let submit = |env: pb::Envelope| pb::SubmitRequest {
        transaction_id: p.tx_id.clone(),
        channel_id: CHANNEL.into(),
        prepared_transaction: Some(env),
    };
    // Envelope signed by someone other than the creator.
    let s = rpc
        .submit(submit(p.sign_prepared(&other, &prepared)))
        .await
        .unwrap_err();
    assert_eq!(s.code(), tonic::Code::PermissionDenied, "{s:?}");
    // Envelope payload altered after signing.
    let mut env = p.sign_prepared(&id, &prepared);
    env.payload.push(0);
    let s = rpc.submit(submit(env)).await.unwrap_err();
    assert_eq!(s.code(), tonic::Code::InvalidArgument, "{s:?}");
    // Before a valid submission, there is no commit status.
    let status = p.commit_status_request(&id);
    assert_eq!(
        rpc.commit_status(status.clone()).await.unwrap_err().code(),
        tonic::Code::NotFound
    );
    rpc.submit(submit(p.sign_prepared(&id, &prepared)))
        .await
        .unwrap();
    assert_eq!(sim.blocks(), 2, "the registration and the anchor");

    // Commit status: the signature covers the request bytes, and only the creator may ask.
    let ok = rpc
        .commit_status(status.clone())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ok.result, pb::TxValidationCode::Valid as i32);
    assert_eq!(ok.block_number, 2, "after the registration");
    let mut bad = status.clone();
    bad.signature = other.sign(&bad.request);
    assert_eq!(
        rpc.commit_status(bad).await.unwrap_err().code(),
        tonic::Code::PermissionDenied
    );
    let snoop = p.commit_status_request(&other);
    assert_eq!(
        rpc.commit_status(snoop).await.unwrap_err().code(),
        tonic::Code::PermissionDenied
    );
    // Garbage bytes get a clear error, not a crash.
    let garbage = pb::SignedCommitStatusRequest {
        request: vec![0xff; 7],
        signature: vec![],
    };
    assert_eq!(
        rpc.commit_status(garbage).await.unwrap_err().code(),
        tonic::Code::InvalidArgument
    );
    let not_a_proposal = pb::SignedProposal {
        proposal_bytes: vec![0x0a, 0xff],
        signature: vec![1, 2, 3],
    };
    assert_eq!(
        rpc.endorse(endorse(not_a_proposal, "x"))
            .await
            .unwrap_err()
            .code(),
        tonic::Code::InvalidArgument
    );
    // The proposal hash the peer endorsed is the one the client computes.
    let payload = pb::Payload::decode(prepared.payload.as_slice()).unwrap();
    assert!(payload.header.is_some());
    g.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_endorsement_fails_mvcc_validation() {
    let (_sim, g, id) = gateway().await;
    let mut rpc = raw(&g).await;
    let (a, _) = cosigned(11, 1);
    let (b, _) = cosigned(11, 2);
    let mut rng = rand_core::OsRng;
    // Two conflicting anchors endorsed against the same (empty) state…
    let pa = ProposedTransaction::new(&id, &anchor_invocation(&a.to_note()), 1, &mut rng);
    let pb_ = ProposedTransaction::new(&id, &anchor_invocation(&b.to_note()), 1, &mut rng);
    let mut prepared = Vec::new();
    for p in [&pa, &pb_] {
        let r = rpc
            .endorse(pb::EndorseRequest {
                transaction_id: p.tx_id.clone(),
                channel_id: CHANNEL.into(),
                proposed_transaction: Some(p.signed.clone()),
                endorsing_organizations: vec![],
            })
            .await
            .unwrap()
            .into_inner();
        prepared.push(r.prepared_transaction.unwrap());
    }
    // …only the first to commit is valid.
    for (p, env) in [&pa, &pb_].into_iter().zip(&prepared) {
        rpc.submit(pb::SubmitRequest {
            transaction_id: p.tx_id.clone(),
            channel_id: CHANNEL.into(),
            prepared_transaction: Some(p.sign_prepared(&id, env)),
        })
        .await
        .unwrap();
    }
    let code = |p: &ProposedTransaction| {
        let req = p.commit_status_request(&id);
        let mut rpc = rpc.clone();
        async move { rpc.commit_status(req).await.unwrap().into_inner().result }
    };
    assert_eq!(code(&pa).await, pb::TxValidationCode::Valid as i32);
    assert_eq!(
        code(&pb_).await,
        pb::TxValidationCode::MvccReadConflict as i32
    );
    g.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_anchors_the_committees_cosigned_checkpoints() {
    let (sim, g, id) = bare_gateway().await;
    let mut c = Cluster::start(3, 2, fast_tuning()).await;
    let leader = c.wait_leader(&[]).await;
    for id in c.nodes.keys().copied().collect::<Vec<_>>() {
        let anchorer = Anchorer::new(client(&g, id_for(&sim, id)));
        c.nodes
            .get_mut(&id)
            .unwrap()
            .spawn_anchoring(anchorer, Duration::from_millis(100));
    }
    drop(id);
    // The channel admin registers the committee's keys for its origin (until then the chaincode
    // refuses the leader's anchors with 412 and the anchorer retries).
    let origin = c.nodes[&leader].read().unwrap().state().committee().clone();
    let origin_name = {
        c.nodes[&leader].propose_own(note("first")).await.unwrap();
        c.wait_agree(1).await;
        for n in c.nodes.values() {
            n.cosign_now().await.unwrap();
        }
        c.nodes[&leader]
            .latest_checkpoint()
            .unwrap()
            .expect("a first checkpoint")
            .checkpoint
            .origin
    };
    register(&sim, &g, &origin_name, &origin.members, origin.threshold).await;
    for i in 0..5 {
        c.nodes[&leader]
            .propose_own(note(&format!("a{i}")))
            .await
            .unwrap();
    }
    c.wait_agree(5).await;
    for n in c.nodes.values() {
        n.cosign_now().await.unwrap();
    }
    let cp = c.nodes[&leader].latest_checkpoint().unwrap().unwrap();
    let auditor = Anchorer::new(client(&g, identity_enrolled(&sim, "auditor")));
    let mut anchored = None;
    for _ in 0..100 {
        anchored = auditor.get(&cp.checkpoint.origin, None).await.unwrap();
        if anchored
            .as_ref()
            .is_some_and(|a| a.checkpoint.size >= cp.checkpoint.size)
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let anchored = anchored.expect("the leader anchored a checkpoint");
    assert!(anchored.checkpoint.size >= cp.checkpoint.size);
    // What Fabric holds is a checkpoint of the committee's own log: t cosignatures, and the
    // live ledger extends it.
    let committee: Vec<_> = c.members.iter().map(|m| m.key().identity()).collect();
    anchored.verify_quorum(&committee, 2).unwrap();
    let export = c.nodes[&leader].export().unwrap();
    let report = medtech_ledger::export::verify(&export);
    assert!(report.passed(), "{}", report.to_text());
    {
        let guard = c.nodes[&leader].read().unwrap();
        let tree = guard.log().tree();
        let (old, new) = (anchored.checkpoint.size, tree.size());
        let proof = tree.consistency_proof(old, new).unwrap();
        let head = medtech_ledger::checkpoint::Checkpoint {
            origin: anchored.checkpoint.origin.clone(),
            size: new,
            root: tree.root(),
        };
        medtech_ledger::checkpoint::verify_extends(&anchored.checkpoint, &head, &proof).unwrap();
    }
    std::mem::take(&mut c.nodes);
    g.shutdown().await;
}

fn id_for(sim: &SimulatedGateway, node: u64) -> MspIdentity {
    identity_enrolled(sim, &format!("node-{node}"))
}
