//! Runs every party of a key generation in one process, each round's messages encoded to bytes
//! and decoded again as a transport would, parties stepping in parallel threads. For tests,
//! rehearsals and the benchmark; the ceremony runs the same [`Party`] over TLS.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rand_core::{CryptoRng, RngCore};

use super::{KeyOutput, Message, Outgoing, Parameters, Party, Round, Step};
use crate::error::{Error, Result};
use crate::keys::PartyIndex;

/// The protocol's phases, for timing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Phase {
    /// M1–M2: sampling and distributed trial division.
    Sieve,
    /// M3–M4: opening N and public trial division.
    Modulus,
    /// M5–M7: the biprimality test.
    Biprimality,
    /// M8–M9: the gcd step.
    Gcd,
    /// C1–C2: certifying that N is the product of the committed shares.
    Certify,
    /// A: opening the seeds of a rejected batch and re-deriving every party's messages.
    Audit,
    /// K1–K4: shares of the decryption exponent, θ, verification keys and the test decryption.
    Key,
}

impl Phase {
    /// The phase a round belongs to.
    pub fn of(round: Round) -> Phase {
        match round {
            Round::SieveShares | Round::SieveProducts => Phase::Sieve,
            Round::CandidateShares | Round::ModulusShares => Phase::Modulus,
            Round::BiprimeFirstCommit
            | Round::BiprimeFirst
            | Round::BiprimeCommit
            | Round::BiprimeReveal => Phase::Biprimality,
            Round::GcdShares | Round::GcdReveal => Phase::Gcd,
            Round::CertifyCommit
            | Round::CertifyComplaints
            | Round::CertifyReveals
            | Round::CertifyProducts => Phase::Certify,
            Round::BatchAudit => Phase::Audit,
            Round::KeyShares
            | Round::KeyComplaints
            | Round::KeyAnswers
            | Round::MaskedProduct
            | Round::Reshare
            | Round::ReshareComplaints
            | Round::ReshareAnswers
            | Round::TestDecryption
            | Round::Refresh
            | Round::RefreshComplaints
            | Round::RefreshAnswers
            | Round::RefreshTest => Phase::Key,
        }
    }

    /// A short name.
    pub fn name(self) -> &'static str {
        match self {
            Phase::Sieve => "sieve",
            Phase::Modulus => "modulus",
            Phase::Biprimality => "biprimality",
            Phase::Gcd => "gcd",
            Phase::Certify => "certify",
            Phase::Audit => "audit",
            Phase::Key => "key",
        }
    }
}

/// What an in-process run produced.
#[derive(Debug)]
pub struct Run {
    /// Every party's output, in index order.
    pub outputs: Vec<KeyOutput>,
    /// Rounds executed.
    pub rounds: u32,
    /// Bytes of all encoded messages (a direct message counted once, a broadcast once per
    /// recipient other than its sender).
    pub bytes: u64,
    /// Wall time per phase (all parties stepping in parallel).
    pub phase_time: BTreeMap<Phase, Duration>,
    /// Total wall time.
    pub elapsed: Duration,
    /// Every broadcast, as delivered (the public transcript).
    pub broadcasts: Vec<Message>,
}

/// A hook that may alter a message after its sender produced it and before it is encoded — how
/// tests play a cheating party.
pub type Tamper<'a> = &'a mut dyn FnMut(&mut Message);

/// Runs `params` with one RNG per party (index order). On failure, the error of the first
/// party (index order) that failed in the round where the run stopped.
pub fn run_in_process<R: RngCore + CryptoRng + Send>(
    params: &Parameters,
    rngs: Vec<R>,
    tamper: Option<Tamper<'_>>,
) -> Result<Run> {
    run_in_process_each(params, rngs, tamper).map_err(|mut errors| {
        errors
            .iter_mut()
            .find_map(Option::take)
            .unwrap_or_else(|| Error::KeyGenerationFailed("the run failed without an error".into()))
    })
}

/// [`run_in_process`], but a failure gives every party's verdict in the round where the run
/// stopped (index order; `None` for a party that went on), so that tests can check that every
/// honest party names the same culprit, not only the first.
pub fn run_in_process_each<R: RngCore + CryptoRng + Send>(
    params: &Parameters,
    mut rngs: Vec<R>,
    mut tamper: Option<Tamper<'_>>,
) -> core::result::Result<Run, Vec<Option<Error>>> {
    let one = |e: Error| vec![Some(e)];
    let n = usize::from(params.parties());
    if rngs.len() != n {
        return Err(one(Error::InvalidParameters(format!(
            "{} random generators for {n} parties",
            rngs.len()
        ))));
    }
    let start = Instant::now();
    let started: Vec<Result<(Party, Outgoing)>> = std::thread::scope(|s| {
        let handles: Vec<_> = rngs
            .iter_mut()
            .enumerate()
            .map(|(k, rng)| s.spawn(move || Party::new(params, PartyIndex(k as u16 + 1), rng)))
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join().unwrap_or_else(|_| {
                    Err(Error::KeyGenerationFailed(
                        "a party's thread panicked".into(),
                    ))
                })
            })
            .collect()
    });
    let mut parties = Vec::with_capacity(n);
    let mut outgoing = Vec::with_capacity(n);
    if started.iter().any(|r| r.is_err()) {
        return Err(started.into_iter().map(|r| r.err()).collect());
    }
    for (p, out) in started.into_iter().flatten() {
        parties.push(p);
        outgoing.push(out);
    }
    let mut phase_time: BTreeMap<Phase, Duration> = BTreeMap::new();
    let mut bytes = 0u64;
    let mut rounds = 0u32;
    let mut broadcasts = Vec::new();
    loop {
        rounds += 1;
        let inboxes = deliver(n, outgoing, &mut tamper, &mut bytes).map_err(one)?;
        if let Some(first) = inboxes.first() {
            broadcasts.extend(first.iter().filter(|m| m.to.is_none()).cloned());
        }
        let round = parties
            .first()
            .map(Party::round)
            .unwrap_or(Round::SieveShares);
        let t0 = Instant::now();
        let results: Vec<Result<Step>> = std::thread::scope(|s| {
            let handles: Vec<_> = parties
                .into_iter()
                .zip(inboxes)
                .zip(rngs.iter_mut())
                .map(|((p, inbox), rng)| s.spawn(move || p.receive(inbox, rng)))
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join().unwrap_or_else(|_| {
                        Err(Error::KeyGenerationFailed(
                            "a party's thread panicked".into(),
                        ))
                    })
                })
                .collect()
        });
        *phase_time.entry(Phase::of(round)).or_default() += t0.elapsed();
        if results.iter().any(|r| r.is_err()) {
            return Err(results.into_iter().map(|r| r.err()).collect());
        }
        let mut next = Vec::with_capacity(n);
        let mut outs = Vec::with_capacity(n);
        let mut done = Vec::with_capacity(n);
        for r in results.into_iter().flatten() {
            match r {
                Step::Continue(p, out) => {
                    next.push(*p);
                    outs.push(out);
                }
                Step::Done(o) => done.push(*o),
            }
        }
        if done.len() == n {
            return Ok(Run {
                outputs: done,
                rounds,
                bytes,
                phase_time,
                elapsed: start.elapsed(),
                broadcasts,
            });
        }
        if !done.is_empty() {
            return Err(one(Error::KeyGenerationFailed(
                "parties finished in different rounds".into(),
            )));
        }
        parties = next;
        outgoing = outs;
    }
}

/// Encodes, (maybe) tampers, decodes and routes one round's messages (encoding per sender and
/// decoding per recipient in parallel threads).
fn deliver(
    n: usize,
    outgoing: Vec<Outgoing>,
    tamper: &mut Option<Tamper<'_>>,
    bytes: &mut u64,
) -> Result<Vec<Vec<Message>>> {
    let mut outgoing = outgoing;
    if let Some(t) = tamper.as_mut() {
        // Direct messages first, so that a cheating sender can make its broadcast (e.g. the
        // digests of what it sent) agree with what it altered.
        for out in &mut outgoing {
            for d in &mut out.direct {
                t(d);
            }
            if let Some(b) = out.broadcast.as_mut() {
                t(b);
            }
        }
    }
    // (recipient or None for everyone, sender, wire bytes)
    type Wire = (Option<usize>, usize, Vec<u8>);
    let encoded: Vec<Vec<Wire>> = std::thread::scope(|s| {
        let handles: Vec<_> = outgoing
            .iter()
            .map(|out| {
                s.spawn(move || {
                    let mut w: Vec<Wire> = Vec::new();
                    if let Some(b) = &out.broadcast {
                        w.push((None, usize::from(b.from.0), b.to_bytes()));
                    }
                    for d in &out.direct {
                        let to =
                            d.to.map(|p| usize::from(p.0))
                                .filter(|&to| (1..=n).contains(&to));
                        if let Some(to) = to {
                            w.push((Some(to), usize::from(d.from.0), d.to_bytes()));
                        }
                    }
                    w
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_default())
            .collect()
    });
    drop(outgoing);
    for (to, from, wire) in encoded.iter().flatten() {
        *bytes += match to {
            None => (wire.len() * (n - 1)) as u64,
            Some(to) if to != from => wire.len() as u64,
            Some(_) => 0,
        };
    }
    let encoded = &encoded;
    let decoded: Vec<Result<Vec<Message>>> = std::thread::scope(|s| {
        let handles: Vec<_> = (1..=n)
            .map(|me| {
                s.spawn(move || {
                    encoded
                        .iter()
                        .flatten()
                        .filter(|(to, _, _)| to.is_none_or(|to| to == me))
                        .map(|(_, _, wire)| Message::from_bytes(wire))
                        .collect::<Result<Vec<_>>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join().unwrap_or_else(|_| {
                    Err(Error::KeyGenerationFailed(
                        "a decoding thread panicked".into(),
                    ))
                })
            })
            .collect()
    });
    decoded.into_iter().collect()
}
