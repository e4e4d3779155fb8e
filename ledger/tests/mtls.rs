//! The Raft endpoint accepts an RPC only from the member whose certificate is pinned for the
//! node id the RPC claims.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{fast_tuning, Cluster};
use medtech_ledger::raft::NodeId;
use medtech_ledger::tls::{CommitteeCa, NodeTls};
use medtech_protos::ledger::v1 as pb;
use openraft::raft::VoteRequest;
use openraft::Vote;
use pb::raft_service_client::RaftServiceClient;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};

async fn vote_as(
    target: &std::net::SocketAddr,
    target_name: &str,
    ca_pem: &str,
    client: &NodeTls,
    claimed: NodeId,
) -> Result<(), tonic::Status> {
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca_pem))
        .identity(Identity::from_pem(&client.cert_pem, &client.key_pem))
        .domain_name(target_name);
    let ch = Endpoint::from_shared(format!("https://{target}"))
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect()
        .await
        .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    let rpc: VoteRequest<NodeId> = VoteRequest::new(Vote::new(1, claimed), None);
    let payload = pb::RaftPayload {
        format: 1,
        data: postcard::to_stdvec(&rpc).unwrap(),
    };
    RaftServiceClient::new(ch).vote(payload).await.map(|_| ())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_raft_rpc_from_a_member_claiming_another_members_id_is_refused() {
    let c = Cluster::start(3, 2, fast_tuning()).await;
    let target = &c.members[0];
    // Member 2's genuine certificate, claiming to be member 3.
    let err = vote_as(
        &target.addr,
        &target.name,
        c.ca.cert_pem(),
        &c.members[1].tls,
        3,
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied, "{err}");
    assert!(err.message().contains("does not match node 3"));
    // A certificate from the committee CA for a name that is not a member.
    let stranger = c.ca.issue("hospital-z").unwrap();
    let err = vote_as(&target.addr, &target.name, c.ca.cert_pem(), &stranger, 2)
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied, "{err}");
    // The same RPC with member 2's certificate claiming member 2 reaches Raft.
    vote_as(
        &target.addr,
        &target.name,
        c.ca.cert_pem(),
        &c.members[1].tls,
        2,
    )
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_certificate_from_another_ca_fails_the_handshake() {
    let c = Cluster::start(3, 2, fast_tuning()).await;
    let target = &c.members[0];
    let rogue_ca = CommitteeCa::generate("rogue").unwrap();
    let rogue = rogue_ca.issue("hospital-b").unwrap();
    let err = vote_as(&target.addr, &target.name, c.ca.cert_pem(), &rogue, 2)
        .await
        .unwrap_err();
    assert_ne!(err.code(), tonic::Code::Ok);
    assert_ne!(
        err.code(),
        tonic::Code::PermissionDenied,
        "refused before any RPC: {err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payload_that_does_not_decode_is_an_invalid_argument() {
    let c = Cluster::start(3, 2, fast_tuning()).await;
    let target = &c.members[0];
    let me = &c.members[1].tls;
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(c.ca.cert_pem()))
        .identity(Identity::from_pem(&me.cert_pem, &me.key_pem))
        .domain_name(target.name.clone());
    let ch = Endpoint::from_shared(format!("https://{}", target.addr))
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = RaftServiceClient::new(ch);
    for data in [vec![], vec![0xff; 7], vec![1, 2, 3]] {
        let err = client
            .append_entries(pb::RaftPayload { format: 1, data })
            .await
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument);
    }
    let err = client
        .vote(pb::RaftPayload {
            format: 9,
            data: vec![],
        })
        .await
        .unwrap_err();
    assert!(err.message().contains("format"));
}
