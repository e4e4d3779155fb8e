//! Anchoring cosigned checkpoints to Fabric, and reading them back.
//!
//! [`Anchorer::anchor`] first reads what Fabric holds at the checkpoint's size
//! (`GetCheckpoint`): the same root means there is nothing to do; a different root is
//! equivocation ([`FabricError::Equivocation`], with the anchored note as evidence) once the
//! anchored note is checked to carry `t` valid signatures of the committee this node knows (a
//! note without them is no evidence against anyone: the peer or chaincode is then not to be
//! trusted, [`FabricError::Gateway`]). Otherwise it reads the latest anchored checkpoint and
//! submits `AnchorCheckpoint` with the note and the consistency proof from that size (the
//! chaincode refuses a checkpoint that does not extend the anchored one), and waits for the
//! commit. Any committee member may anchor; two members anchoring the same checkpoint cost one
//! extra read, and the slower one's transaction fails MVCC validation or finds it anchored.

use std::time::Duration;

use crate::checkpoint::{NodeIdentity, SignedCheckpoint};
use crate::merkle::Hash;

use super::client::GatewayClient;
use super::contract::{ANCHOR, GET};
use super::FabricError;

/// What [`Anchorer::anchor`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AnchorOutcome {
    /// Anchored now, in this transaction and block.
    Anchored {
        /// Transaction ID.
        tx_id: String,
        /// Block number.
        block: u64,
    },
    /// Fabric already held this checkpoint.
    AlreadyAnchored,
    /// Fabric already holds a larger checkpoint of this log; a smaller one cannot follow it.
    Superseded {
        /// The size anchored.
        anchored: u64,
    },
}

/// The consistency proof of this node's log from the first size to the second (`None` if it
/// cannot make one).
pub type ProofSource = dyn Fn(u64, u64) -> Option<Vec<Hash>> + Send + Sync;

/// Anchors checkpoints through a [`GatewayClient`].
#[derive(Clone)]
pub struct Anchorer {
    client: GatewayClient,
    committee: Option<std::sync::Arc<CommitteeSource>>,
}

/// The committee (members, threshold) a conflicting anchored note must be signed by to be
/// evidence of equivocation.
pub type CommitteeSource = dyn Fn() -> Option<(Vec<NodeIdentity>, usize)> + Send + Sync;

impl std::fmt::Debug for Anchorer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Anchorer")
            .field("client", &self.client)
            .field("checks_the_committee", &self.committee.is_some())
            .finish()
    }
}

impl Anchorer {
    /// Over `client` (bound to the anchoring chaincode).
    pub fn new(client: GatewayClient) -> Self {
        Anchorer {
            client,
            committee: None,
        }
    }

    /// Checks a conflicting anchored note against the committee `source` gives (members,
    /// threshold) before calling it equivocation (without a committee every conflicting note is
    /// reported as it is).
    pub fn with_committee(
        mut self,
        source: impl Fn() -> Option<(Vec<NodeIdentity>, usize)> + Send + Sync + 'static,
    ) -> Self {
        self.committee = Some(std::sync::Arc::new(source));
        self
    }

    /// Anchors `checkpoint`, proving with `proof` that it extends the latest anchored one (see
    /// the module docs).
    pub async fn anchor(
        &self,
        checkpoint: &SignedCheckpoint,
        proof: &ProofSource,
    ) -> Result<AnchorOutcome, FabricError> {
        let cp = &checkpoint.checkpoint;
        if let Some(existing) = self.get(&cp.origin, Some(cp.size)).await? {
            if existing.checkpoint == *cp {
                return Ok(AnchorOutcome::AlreadyAnchored);
            }
            if let Some((members, t)) = self.committee.as_ref().and_then(|c| c()) {
                if let Err(e) = existing.verify_quorum(&members, t) {
                    return Err(FabricError::Gateway(format!(
                        "the channel returned a conflicting note of size {} that the committee \
                         did not sign ({e}): not evidence of equivocation; do not trust this \
                         peer or chaincode",
                        cp.size
                    )));
                }
            }
            return Err(FabricError::Equivocation {
                size: cp.size,
                anchored_note: existing.to_note(),
            });
        }
        let note = checkpoint.to_note();
        let mut args = vec![note.into_bytes()];
        if let Some(latest) = self.get(&cp.origin, None).await? {
            let anchored = latest.checkpoint.size;
            if anchored > cp.size {
                return Ok(AnchorOutcome::Superseded { anchored });
            }
            let hashes = proof(anchored, cp.size).ok_or_else(|| {
                FabricError::Gateway(format!(
                    "no consistency proof from the anchored size {anchored} to {}",
                    cp.size
                ))
            })?;
            args.push(hashes.concat());
        }
        let args: Vec<&[u8]> = args.iter().map(Vec::as_slice).collect();
        let committed = self.client.submit(ANCHOR, &args).await?;
        Ok(AnchorOutcome::Anchored {
            tx_id: committed.tx_id,
            block: committed.block,
        })
    }

    /// The checkpoint Fabric holds for `origin` at `size` (`None`: the latest), if any.
    pub async fn get(
        &self,
        origin: &str,
        size: Option<u64>,
    ) -> Result<Option<SignedCheckpoint>, FabricError> {
        let size = size.map_or_else(|| "latest".to_owned(), |s| s.to_string());
        let r = self
            .client
            .evaluate(GET, &[origin.as_bytes(), size.as_bytes()])
            .await?;
        if r.status >= 400 {
            return Err(FabricError::Chaincode {
                status: r.status,
                message: r.message,
            });
        }
        if r.payload.is_empty() {
            return Ok(None);
        }
        let text = String::from_utf8(r.payload)
            .map_err(|_| FabricError::Gateway("anchored note is not UTF-8".into()))?;
        SignedCheckpoint::from_note(&text)
            .map(Some)
            .map_err(|e| FabricError::Gateway(format!("anchored note: {e}")))
    }

    /// Every `every`, anchors the newest checkpoint `latest()` returns if it is larger than the
    /// last one anchored. Runs until the task is dropped; failures are logged and retried at the
    /// next tick, except equivocation, which is logged as an error every time it is seen.
    pub async fn run<F>(self, every: Duration, mut latest: F, proof: Box<ProofSource>)
    where
        F: FnMut() -> Option<SignedCheckpoint> + Send,
    {
        let mut anchored = 0u64;
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let Some(cp) = latest() else { continue };
            if cp.checkpoint.size <= anchored {
                continue;
            }
            match self.anchor(&cp, proof.as_ref()).await {
                Ok(outcome) => {
                    anchored = cp.checkpoint.size;
                    tracing::info!(size = anchored, ?outcome, "checkpoint anchored to Fabric");
                }
                Err(e @ FabricError::Equivocation { .. }) => {
                    tracing::error!(error = %e, "Fabric anchor contradicts the ledger");
                }
                Err(e) => tracing::warn!(error = %e, "anchoring deferred"),
            }
        }
    }
}
