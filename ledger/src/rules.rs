//! Application rules: what the ledger's generic core (rules 1–7 of [`crate::state`]) cannot
//! check by itself, because it needs the query protocol's cryptography, which this crate does
//! not depend on.
//!
//! The node that runs the state machine injects them ([`crate::raft::node::NodeConfig::rules`],
//! [`LedgerState::set_rules`]); the committee node's implementation lives in the federation
//! crate (`medtech_federation::rules`). They are part of the state machine: every member applies
//! the same rules to the same log, so they must be deterministic — no clock, no randomness, no
//! I/O, and no decision that depends on the platform (floating-point results are compared with
//! a tolerance, never bit for bit).
//!
//! Rule 8 of the state machine: an entry the core accepts is applied only if
//! [`AppRules::check`] accepts it too. Rule 9: a `QueryFailed` takes effect at once only with
//! the ground `QUERY_INVALID`, which [`AppRules::check_failure_ground`] confirms; any other
//! takes effect only when `t` distinct current members posted one for the query (see
//! [`crate::state`]).
//!
//! A ledger without application rules uses [`RefuseReleases`]: it cannot verify a release, so
//! it refuses every `ReleaseResult`.

use std::sync::Arc;

use crate::entry::{Kind, ParsedEntry};
use crate::state::LedgerState;

/// The application's rules, consulted by [`LedgerState::check`] and told of every applied
/// entry by [`LedgerState::apply`].
pub trait AppRules: Send + Sync {
    /// Whether `e`, which the ledger's own rules accept against `state`, may be applied.
    /// Deterministic: the same verdict on every member and on an auditor replaying an export.
    fn check(&self, e: &ParsedEntry, state: &LedgerState) -> Result<(), String>;

    /// Whether a `QueryFailed` for `query` with ground `QUERY_INVALID` holds: the query cannot
    /// run on this committee, as every member recomputes. `Ok` lets one member's entry end the
    /// query (rule 9); an error rejects the entry. `state` is the state before the entry.
    /// Without a way to check (the default), the ground is refused: a failure then takes `t`
    /// members' approvals.
    fn check_failure_ground(&self, query: &str, state: &LedgerState) -> Result<(), String> {
        let _ = state;
        Err(format!(
            "this ledger cannot check that query {query} is invalid: post the failure \
             without a ground (an approval)"
        ))
    }

    /// Observes an entry applied at log position `seq` (also on replay from disk, where
    /// [`Self::check`] is not called again).
    fn applied(&mut self, e: &ParsedEntry, seq: u64);
}

/// Makes a fresh set of rules for a state built from the genesis (a node rebuilds its state at
/// every start).
#[derive(Clone)]
pub struct RulesFactory(Arc<dyn Fn() -> Box<dyn AppRules> + Send + Sync>);

impl RulesFactory {
    /// A factory calling `make`.
    pub fn new(make: impl Fn() -> Box<dyn AppRules> + Send + Sync + 'static) -> Self {
        RulesFactory(Arc::new(make))
    }

    /// A fresh set of rules.
    pub fn make(&self) -> Box<dyn AppRules> {
        (self.0)()
    }
}

impl std::fmt::Debug for RulesFactory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RulesFactory")
    }
}

/// The bare ledger's rules: it has no way to verify a release, so it refuses every
/// `ReleaseResult`; a `QueryFailed` needs `t` members once the query's record holds a noise
/// share.
#[derive(Clone, Copy, Debug, Default)]
pub struct RefuseReleases;

impl AppRules for RefuseReleases {
    fn check(&self, e: &ParsedEntry, _: &LedgerState) -> Result<(), String> {
        match e.kind() {
            Some(Kind::ReleaseResult(_)) => Err(
                "this ledger has no application rules that can verify a release: refused".into(),
            ),
            _ => Ok(()),
        }
    }

    fn applied(&mut self, _: &ParsedEntry, _: u64) {}
}

/// The ledger's core rules only: releases and failure grounds are accepted unchecked. Used by
/// [`crate::export::verify`] when it replays an export without the committee's key (its report
/// says so); never by a node.
#[derive(Clone, Copy, Debug, Default)]
pub struct CoreOnly;

impl AppRules for CoreOnly {
    fn check(&self, _: &ParsedEntry, _: &LedgerState) -> Result<(), String> {
        Ok(())
    }

    fn check_failure_ground(&self, _: &str, _: &LedgerState) -> Result<(), String> {
        Ok(())
    }

    fn applied(&mut self, _: &ParsedEntry, _: u64) {}
}
