//! Offline verification of a key generation from its **broadcasts alone** — what a security
//! reviewer runs on a ceremony transcript.
//!
//! [`replay`] re-runs every public computation of every batch, in order, exactly as the parties
//! did: every dealer's share digests (M1, M3, M8) and the public half of the consistency check
//! of its sharings (M2, M4, M9), which candidates survived distributed trial division (M2), the
//! opened moduli and their public trial division (M4), the commitments to the first
//! biprimality repetition and their openings (M5a–M5b; at most `MAX_CERTIFIED` passing moduli
//! go on, and no run has more than `MAX_BATCHES` batches),
//! every commitment and opening of the remaining repetitions (M6–M7), the gcd step (M9); for
//! every rejected batch, the seed openings against the M1 commitments and the audit (module
//! `audit`: the re-derived M1 broadcasts, the clear check of every candidate's `p` and `q`, and
//! the re-run of every party from its seed when a candidate with both prime was rejected —
//! naming the same party the live parties named); the
//! certification of the accepted modulus (C1 commitments, every C1b complaint's evidence against
//! the M3 digests and every C1c answer, every C2 multiplication proof against
//! the M4 values, and the derived φ commitments); then the key stage's commitments (K1), every
//! product proof and θ (K2),
//! every reshared constant against its proven product and every verification key from the
//! reshare commitments (K3). It returns the threshold key this transcript determines — which
//! must equal the key the ceremony published — or an error naming the party whose broadcast is
//! missing, malformed or inconsistent. Direct (secret) messages are not needed and must not be
//! in a transcript.
//!
//! What it cannot check is what nobody can check from public data: that each party's point of a
//! combination matches the shares it privately received (the party itself checks that), and
//! that the published products of the accepted batch's rejected candidates are products (the
//! accepted modulus's are proven in C2; a rejected batch's are re-derived by its audit;
//! docs/dkg.md, "Limits").

use std::collections::BTreeMap;

use super::modulus::{
    batches_exhausted, biprime_commitments, certified, chosen_candidate, first_test_passes,
    gcd_passes, moduli_in, open_gcd_reveal, open_moduli, open_modulus_shares, open_sieve_products,
    share_digests, sieve_passes,
};
use super::{audit, certify, key, product, Message, Parameters, Round, Setup};
use crate::bigint::Int;
use crate::dealer::verification_base;
use crate::error::{Error, Result};
use crate::keys::{PartyIndex, PublicKey, ThresholdPublicKey};

/// What a successful replay established.
#[derive(Debug)]
pub struct Verified {
    /// The threshold key the transcript determines.
    pub key: ThresholdPublicKey,
    /// Candidate batches replayed (those the broadcasts cover).
    pub batches: u32,
    /// Moduli opened (and trial-divided) across all batches.
    pub moduli_opened: u64,
    /// Moduli that went through the biprimality test.
    pub moduli_tested: u64,
    /// Broadcast messages checked.
    pub messages: usize,
}

/// Replays the public side of a key generation with `params` from its broadcasts (any order).
pub fn replay(params: &Parameters, broadcasts: &[Message]) -> Result<Verified> {
    let setup = Setup::new(params);
    let n = setup.n;
    let mut index: BTreeMap<(Round, u32, u16), &Message> = BTreeMap::new();
    for m in broadcasts {
        if m.to.is_some() {
            return Err(super::blame(m, "a direct (secret) message in a transcript"));
        }
        if m.from.0 == 0 || m.from.0 > n {
            return Err(Error::UnknownParty {
                party: m.from,
                parties: n,
            });
        }
        if m.session != params.session {
            return Err(super::blame(m, "message of another session"));
        }
        if index.insert((m.round, m.batch, m.from.0), m).is_some() {
            return Err(super::blame(m, "two broadcasts in one round"));
        }
    }
    let modulus_batches = || {
        broadcasts
            .iter()
            .filter(|m| m.round < Round::KeyShares)
            .map(|m| m.batch)
    };
    let max_batch = modulus_batches().max().unwrap_or(0);
    if max_batch >= super::MAX_BATCHES {
        return Err(batches_exhausted());
    }
    // A transcript may keep only the accepted batch (earlier ones by hash): replay from the first
    // batch it holds.
    let first_batch = modulus_batches().min().unwrap_or(0);
    let mut used = 0usize;
    let mut get = |round: Round, batch: u32, from: &mut dyn Iterator<Item = u16>| {
        from.map(|p| {
            index
                .get(&(round, batch, p))
                .copied()
                .ok_or_else(|| Error::Misbehaviour {
                    party: PartyIndex(p),
                    round,
                    reason: format!("no broadcast in batch {batch}"),
                })
        })
        .collect::<Result<Vec<&Message>>>()
        .inspect(|v| used += v.len())
    };
    let s = setup.product_parties.clone();
    let k = params.batch;
    let (mut opened_count, mut tested) = (0u64, 0u64);
    let all = || 1..=n;
    for batch in first_batch..=max_batch {
        // M1: every dealer's share digests and batch-seed commitment (the accepted batch always
        // keeps them).
        let m1 = get(Round::SieveShares, batch, &mut all())?;
        share_digests(&setup, &m1)?;
        let seed_commitments = audit::seed_commitments(&m1)?;
        // A batch that yields no modulus ends with every seed opened and the batch audited.
        macro_rules! rejected {
            () => {{
                let openings = get(Round::BatchAudit, batch, &mut all())?;
                audit_rejected(&setup, batch, &index, &seed_commitments, &openings)?;
                continue;
            }};
        }
        // A transcript may keep the sieve products by hash only; then the opened moduli say how
        // many candidates survived (every product party must agree).
        let count = if index.contains_key(&(Round::SieveProducts, batch, s[0])) {
            let msgs = get(Round::SieveProducts, batch, &mut all())?;
            let opened = open_sieve_products(&setup, &msgs, k)?;
            let pass = sieve_passes(&setup, &opened.products, k);
            pass.iter().filter(|&&p| p).count()
        } else {
            index
                .get(&(Round::ModulusShares, batch, s[0]))
                .map_or(0, |m| moduli_in(&setup, m))
        };
        if count == 0 {
            rejected!();
        }
        let m3_digests = share_digests(&setup, &get(Round::CandidateShares, batch, &mut all())?)?;
        let msgs = get(Round::ModulusShares, batch, &mut all())?;
        let opened = open_modulus_shares(&setup, &msgs, count)?;
        // (position among the opened candidates, N)
        let moduli: Vec<(usize, Int)> = open_moduli(&setup, &opened.products, count)
            .into_iter()
            .enumerate()
            .filter_map(|(at, n)| n.map(|n| (at, n)))
            .collect();
        opened_count += count as u64;
        if moduli.is_empty() {
            rejected!();
        }
        tested += moduli.len() as u64;
        let refs: Vec<&Int> = moduli.iter().map(|(_, n)| n).collect();
        let digests = biprime_commitments(&get(Round::BiprimeFirstCommit, batch, &mut all())?)?;
        let reveal = get(Round::BiprimeFirst, batch, &mut all())?;
        let pass = first_test_passes(&setup, batch, &reveal, &digests, &refs)?;
        let s3: Vec<&(usize, Int)> = moduli
            .iter()
            .zip(certified(pass))
            .filter_map(|(m, ok)| ok.then_some(m))
            .collect();
        let s3_refs: Vec<&Int> = s3.iter().map(|(_, n)| n).collect();
        if s3.is_empty() {
            rejected!();
        }
        let digests = biprime_commitments(&get(Round::BiprimeCommit, batch, &mut all())?)?;
        let reveal = get(Round::BiprimeReveal, batch, &mut all())?;
        let Some(at) = chosen_candidate(&setup, batch, &reveal, &digests, &s3_refs)? else {
            rejected!();
        };
        let (position, modulus) = s3[at].clone();
        share_digests(&setup, &get(Round::GcdShares, batch, &mut all())?)?;
        let msgs = get(Round::GcdReveal, batch, &mut all())?;
        if !gcd_passes(&setup, &open_gcd_reveal(&setup, &msgs)?.products, &modulus) {
            rejected!();
        }
        // C1–C2: the chosen modulus is the product of the committed p_i, q_i sharings.
        let c1 = get(Round::CertifyCommit, batch, &mut all())?;
        let coms = certify::commitments(&setup, &c1)?;
        let complaints = certify::complaints(
            &setup,
            batch,
            &m3_digests,
            count + 1,
            position,
            &get(Round::CertifyComplaints, batch, &mut all())?,
        )?;
        certify::resolve(
            &setup,
            &coms,
            &complaints,
            &get(Round::CertifyReveals, batch, &mut all())?,
        )?;
        let ys: Vec<Int> = opened
            .products
            .iter()
            .map(|b| b[position].clone())
            .collect();
        certify::check_products(
            &setup,
            batch,
            &modulus,
            &coms,
            &ys,
            &get(Round::CertifyProducts, batch, &mut s.iter().copied())?,
        )?;
        let phi = certify::derived_phi(&setup, &modulus, &coms)?;
        if batch != max_batch {
            return Err(Error::KeyGenerationFailed(format!(
                "batch {batch} accepted a modulus but the transcript goes on to batch {max_batch}"
            )));
        }
        let pk = PublicKey::from_modulus(modulus.clone())?;
        let v = verification_base(&pk);
        let v_inv = v
            .invert(pk.nn())
            .ok_or_else(|| Error::KeyGenerationFailed("verification base is not a unit".into()))?;
        let k1 = key::key_commitments(&setup, &get(Round::KeyShares, 0, &mut (1..=n))?, pk.nn())?;
        let feldman = key::Feldman::new(v.clone(), v_inv.clone(), pk.nn().clone());
        let complaints = key::key_complaints(&setup, &get(Round::KeyComplaints, 0, &mut (1..=n))?)?;
        key::key_answers(
            &setup,
            pk.n(),
            &feldman,
            &k1,
            &complaints,
            &get(Round::KeyAnswers, 0, &mut (1..=n))?,
        )?;
        let bases = product::bases(&setup, &phi, &k1, pk.nn())?;
        let (ys, ws) = product::verify(
            &setup,
            &modulus,
            pk.nn(),
            &v,
            &v_inv,
            &bases,
            &get(Round::MaskedProduct, 0, &mut s.iter().copied())?,
        )?;
        let theta = key::open_theta(&setup, &ys, &modulus)?;
        let reshares = get(Round::Reshare, 0, &mut s.iter().copied())?;
        let commitments = key::reshare_commitments(&setup, &ws, &reshares, pk.nn())?;
        let complaints =
            key::reshare_complaints(&setup, &get(Round::ReshareComplaints, 0, &mut (1..=n))?)?;
        key::reshare_answers(
            &setup,
            &feldman,
            &commitments,
            &complaints,
            &get(Round::ReshareAnswers, 0, &mut s.iter().copied())?,
        )?;
        let key = key::public_key(&setup, pk, v, theta, &commitments)?;
        key::check_test_decryption(
            &params.session,
            &key,
            &get(Round::TestDecryption, 0, &mut (1..=n))?,
        )?;
        if used != broadcasts.len() {
            return Err(Error::KeyGenerationFailed(format!(
                "{} broadcasts in the transcript belong to no step of the protocol",
                broadcasts.len() - used
            )));
        }
        return Ok(Verified {
            key,
            batches: batch - first_batch + 1,
            moduli_opened: opened_count,
            moduli_tested: tested,
            messages: used,
        });
    }
    Err(Error::KeyGenerationFailed(
        "the transcript ends before a modulus was accepted".into(),
    ))
}

/// The audit of rejected batch `batch`, as every party ran it: the openings against the M1
/// commitments, then every party re-run from its seed against the batch's broadcasts.
fn audit_rejected(
    setup: &std::sync::Arc<Setup>,
    batch: u32,
    index: &BTreeMap<(Round, u32, u16), &Message>,
    commitments: &[[u8; 32]],
    openings: &[&Message],
) -> Result<()> {
    let seeds = audit::open_seeds(setup, batch, commitments, openings)?;
    let log: BTreeMap<(Round, u16), &Message> = index
        .iter()
        .filter(|((round, b, _), _)| {
            *b == batch && *round < Round::KeyShares && *round != Round::BatchAudit
        })
        .map(|((round, _, from), m)| ((*round, *from), *m))
        .collect();
    audit::audit_batch(setup, batch, &seeds, &log, None).map(|_| ())
}
