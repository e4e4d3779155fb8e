//! Anchoring cosigned checkpoints to Fabric, and reading them back.
//!
//! [`Anchorer::anchor`] first reads what Fabric holds at the checkpoint's size
//! (`GetCheckpoint`): the same root means there is nothing to do; a different root is
//! equivocation ([`FabricError::Equivocation`], with the anchored note as evidence); nothing
//! means it submits `AnchorCheckpoint` and waits for the commit. Any committee member may
//! anchor; the chaincode is write-once, so two members anchoring the same checkpoint cost one
//! extra read, and the slower one's transaction fails MVCC validation or finds it anchored.

use std::time::Duration;

use crate::checkpoint::SignedCheckpoint;

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
}

/// Anchors checkpoints through a [`GatewayClient`].
#[derive(Clone, Debug)]
pub struct Anchorer {
    client: GatewayClient,
}

impl Anchorer {
    /// Over `client` (bound to the anchoring chaincode).
    pub fn new(client: GatewayClient) -> Self {
        Anchorer { client }
    }

    /// Anchors `checkpoint` (see the module docs).
    pub async fn anchor(
        &self,
        checkpoint: &SignedCheckpoint,
    ) -> Result<AnchorOutcome, FabricError> {
        let cp = &checkpoint.checkpoint;
        if let Some(existing) = self.get(&cp.origin, Some(cp.size)).await? {
            return if existing.checkpoint == *cp {
                Ok(AnchorOutcome::AlreadyAnchored)
            } else {
                Err(FabricError::Equivocation {
                    size: cp.size,
                    anchored_note: existing.to_note(),
                })
            };
        }
        let note = checkpoint.to_note();
        let committed = self.client.submit(ANCHOR, &[note.as_bytes()]).await?;
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
    pub async fn run<F>(self, every: Duration, mut latest: F)
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
            match self.anchor(&cp).await {
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
