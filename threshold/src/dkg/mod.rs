//! Dealer-free generation of the committee's threshold Paillier key.
//!
//! `n` parties generate `N = p·q` and shares of the decryption exponent without anyone — at any
//! point — knowing `p`, `q` or `φ(N)`. The output is the same [`ThresholdPublicKey`] and
//! [`KeyShare`] the dealer produces, so partial decryption and combination are unchanged. The
//! protocol, its security argument and its limits are in `docs/dkg.md`; in short:
//!
//! **Model.** Honest majority: at most `t − 1 < n/2` parties corrupt (so `n ≥ 2t − 1`, which
//! BGW multiplication needs). Point-to-point channels are private and authenticated, and
//! broadcasts reach everyone unchanged — the transport's job (the ceremony signs every message
//! and hashes the transcript). Parties `S = {1, …, 2t − 1}` publish the product shares.
//!
//! **Modulus (Boneh–Franklin 2001, batched).** Per batch of `K` candidates, every random choice
//! of a party derived from a fresh batch seed whose hash is in its M1 broadcast (module `audit`):
//! * M1. Each party samples `p_i, q_i` (party 1: `≡ 3 mod 4` with the top two bits of `p`, `q`
//!   fixed so `|N|` is exact; others `≡ 0 mod 4`) and Shamir-shares, for each group of small
//!   primes with product `M ≤ 2^26`, `p_i mod M` and `q_i mod M` (degree `t − 1`) and a mask
//!   (degree `2t − 2`, constant `< 2^96`) over `F_{2^127−1}`.
//! * M2. Parties in `S` publish `X(j)·Y(j) + M·R(j)`; interpolation gives
//!   `(Σ p_i mod M)(Σ q_i mod M) + M·R₀`, which reveals `N mod M` and hides the rest
//!   statistically (2⁻⁶² at worst). Candidates with `ℓ | N` for a prime `ℓ < 80` are dropped
//!   (≈ 94 % of them) — distributed trial division before the expensive part.
//! * M3–M4. Survivors: integer shares of `Δp_i`, `Δq_i` (degree `t − 1`) and of zero (degree
//!   `2t − 2`), all below `Q = (2^127 − 1)^m`, the smallest such power above every share and
//!   product (the consistency check runs over `Z_Q`, as good as a field for Shamir sharing among
//!   at most 16 parties); parties in `S` publish `y_j = P(j)Q(j) + Z(j)`, and
//!   `Σ λ'_j y_j = Δ³N` opens `N` over the integers. Public trial division of `N` up to `2^16`.
//! * M5a–M5b. The Boneh–Franklin biprimality test, one repetition per candidate as a filter,
//!   with a public `g` derived from the session and `N` (Jacobi symbol 1):
//!   `v₁ = g^((N − p₁ − q₁ + 1)/4)`, `v_i = g^((p_i + q_i)/4)`; `N` passes iff `v₁ / Π v_i = ±1`.
//!   Every party first commits (M5a: salted SHA-256 bound to session, batch, party and the
//!   moduli) to its values for every candidate, then opens them (M5b); a wrong opening names
//!   the sender. At most [`MAX_CERTIFIED`] passing moduli (the first in candidate order) go on.
//! * M6–M7. The remaining repetitions (default 149, so r = 150 in all) committed likewise before
//!   they are opened, so no party can choose any value after seeing the others'. After
//!   [`MAX_BATCHES`] failed batches the generation ends with no key.
//! * A (module `audit`). A batch that yields no modulus ends with every party opening its
//!   batch seed; everyone re-derives every party's M1 broadcast from its seed, then checks in
//!   the clear whether some candidate had `p` and `q` both prime. Only then does it re-run every
//!   party of the batch from its seed and compare each re-derived broadcast (share digests
//!   included, which bind the direct messages) with the one published: the first that differs
//!   names its sender (`candidate_killer_is_named`); a batch of composite candidates only was
//!   rightly rejected and is not re-run. The accepted batch's seed is never opened.
//! * M8–M9. The gcd step: `z = (p + q − 1)·r + N·ρ` opened over a larger such ring, and
//!   `gcd(z mod N, N) = 1` required (it rules out the non-biprimes the test cannot).
//! * C1–C2 (module `certify`), for the accepted modulus only: every dealer commits in `G_P`
//!   to its M3 polynomials, holders check the shares they received, and every product party
//!   proves its M4 value is the product of its committed shares — so `N` is the product of
//!   sums no party could adapt after seeing the others', and a forger is named.
//! * Consistency (module `consistency`): with the shares of M1, M3 and M8 every dealer
//!   broadcasts their digests; in M2, M4 and M9 every party publishes a blinded random linear
//!   combination of its sharings at every point, which each recipient checks against what it
//!   received and anyone checks for degree (and a zero constant for M3's sharings of zero). An
//!   inconsistent share names its dealer.
//!
//! **Key (Nishide–Sakurai 2010, with integer sharing).** With `φ = N + 1 − p − q` and fresh
//! `β = Σ β_i`:
//! * K1. The φ sharing is derived from the certified M3 sharings, `F = Δ(N + 1) − P − Q`, with
//!   public Pedersen commitments in `G_P` (module `pedersen`); each party shares `Δβ_i` over
//!   the integers (degree `t − 1`, coefficients `2^128` times larger than what they hide) and a
//!   mask with constant `N·ρ_i` (degree `2t − 2`), with Feldman commitments `v^(coefficient)`
//!   in `Z*_{N²}`; every share is checked against its range and commitments.
//! * K1b–K1c. A holder whose share fails complains in public; the accused dealer answers with
//!   the share in public, everyone checks it, and a dealer that cannot answer is named by all
//!   (module `complaint`; GJKR 2007). K3b–K3c do the same for K3's reshares.
//! * K2. Parties in `S` publish `F(j)B(j) + R(j)` with a cross-group proof that it is the
//!   product of their committed shares plus the committed mask (module `product`); integer interpolation with `Δ`
//!   gives `θ₀ = Δ²φβ mod N`, public. `θ = Δ⁴φβ mod N` must be a unit.
//! * K3. Degree reduction: each `j ∈ S` reshares `e_j = Δ·λ'_j·F(j)B(j)` (λ' the Δ-scaled
//!   integer Lagrange coefficient) with degree `t − 1` over the integers and Feldman
//!   commitments, whose constant everyone checks against the product proven in K2. Party `k`'s
//!   key share is `s_k = Σ_j g_j(k)` (positive by construction), a degree-`t − 1` sharing of
//!   `d = Δ⁴φβ ≡ 0 mod φ`; `v_k = (Π_j Π_m D_{j,m}^(k^m))^Δ` is its verification key and the
//!   combination constant is θ.
//! * K4. Joint test decryption: every party publishes a proven partial decryption of
//!   `c* = (1+N)^(m*)·h_s^(r*)` (`m*`, `r*` hashed from the session and the key); a bad proof
//!   names its sender, and unless every `t`-subset decrypts `m*` no key is output.
//!
//! **Issue 25, break 1 (closed):** no value published in `Z*_{N²}` has an exponent linear in
//! φ, so a reader of the broadcasts cannot compute φ(N) (tests
//! `transcript_reader_cannot_factor_n`, `published_families_stay_outside_the_one_plus_n_subgroup`;
//! docs/dkg.md, "Break 1 closed").
//!
//! **Issue 25, breaks 2a and 2c (closed for the accepted modulus):** a party that lies in M4 to
//! open a modulus of its choosing is named in C2 (`forged_opening_product_is_named`), and there
//! is no `φ_i` to shift (`shifted_phi_share_cannot_produce_a_key`).
//!
//! What is *not* proven (see docs/dkg.md, "Limits"): the published products of rejected
//! candidates (M2, M4) and of the gcd step (M9), and that the biprimality values come from the
//! certified `p_i, q_i`: a party lying there is named by the batch audit when it makes a
//! batch fail that held a candidate with `p` and `q` prime, but not when the candidates it
//! killed were composite anyway or another candidate of the batch is accepted, and not when it
//! makes the key fail K4 (denial of service); it cannot choose `N`.
//!
//! [`verify::replay`] checks a key generation offline from its broadcasts alone (a ceremony
//! transcript). [`reshare`] refreshes the shares of an existing key or moves it to a new committee.
//!
//! Round state is a type and a transition consumes it; what is sent is a [`Message`]; secret
//! state (`p_i`, `q_i`, polynomial coefficients, shares) is in zeroize-on-drop integers.

mod audit;
mod certify;
mod complaint;
mod consistency;
mod field;
#[cfg(test)]
mod fixtures;
mod key;
mod message;
mod modulus;
mod pedersen;
mod product;
pub mod reshare;
pub mod sim;
pub mod verify;

use std::collections::BTreeMap;
use std::sync::Arc;

use rand_core::{CryptoRng, RngCore};

use crate::bigint::Int;
use crate::error::{Error, Result};
use crate::keys::{
    factorial, primes_below, KeyShare, PartyIndex, ThresholdPublicKey, MAX_MODULUS_BITS,
    MIN_MODULUS_BITS,
};

pub use message::{Message, Outgoing, Round};

use field::{integer_lagrange, lagrange127, ShareRing};

/// Statistical security parameter (bits) for masks and integer sharings.
const STAT_BITS: usize = 128;
/// Primes below this are tested by distributed trial division before `N` is opened.
const SIEVE_BOUND: u64 = 80;
/// Primes below this are tested on the opened `N`.
const TRIAL_BOUND: usize = 1 << 16;
/// Largest product of one group of sieve primes (fits the `F_{2^127−1}` mask analysis).
const GROUP_LIMIT: u64 = 1 << 26;
/// Bits of the stage-1 mask's constant term.
const SIEVE_MASK_BITS: usize = 96;
/// Most parties the dealer-free generation supports (the sieve masks are sized for it).
pub const MAX_DKG_PARTIES: u16 = 16;
/// Most candidate batches one generation runs before it gives up with
/// [`Error::KeyGenerationFailed`] and no key (an honest run overflows with probability
/// ≈ 0.77^64 ≈ 2⁻²⁴ at 2048 bits; see `docs/dkg.md`, "Soundness").
pub const MAX_BATCHES: u32 = 64;
/// Most moduli of one batch that pass the first biprimality repetition and enter the committed
/// repetitions 2…r (the first ones in candidate order; the rest are dropped).
pub const MAX_CERTIFIED: usize = 4;
/// Soundness target: a non-biprime `N` is accepted with probability at most `2^−SOUNDNESS_BITS`
/// over a whole generation.
pub const SOUNDNESS_BITS: u32 = 128;
/// Default repetitions of the biprimality test, every one committed before it is opened: a
/// tested non-biprime passes with probability at most `2^−150`.
pub const DEFAULT_BIPRIME_REPS: u32 = 150;

/// The public parameters of one key generation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Parameters {
    bits: u32,
    parties: u16,
    threshold: u16,
    session: [u8; 32],
    batch: usize,
    biprime_reps: u32,
    /// Set by [`Parameters::insecure_with_biprime_reps_for_tests`]: the repetitions were lowered
    /// below the soundness target on purpose.
    insecure_reps: bool,
}

impl Parameters {
    /// `bits`-bit modulus, `parties` members, any `threshold` decrypt. `session` must be fresh
    /// and agreed by all (the ceremony derives it from its configuration and a nonce from each
    /// party). Requires `2·threshold − 1 ≤ parties` (honest majority).
    pub fn new(bits: u32, parties: u16, threshold: u16, session: [u8; 32]) -> Result<Self> {
        if !bits.is_multiple_of(2) || !(MIN_MODULUS_BITS..=MAX_MODULUS_BITS).contains(&bits) {
            return Err(Error::InvalidParameters(format!(
                "modulus size {bits}: must be even and in {MIN_MODULUS_BITS}..={MAX_MODULUS_BITS}"
            )));
        }
        if !(2..=MAX_DKG_PARTIES).contains(&parties) {
            return Err(Error::InvalidParameters(format!(
                "{parties} parties; dealer-free generation supports 2..={MAX_DKG_PARTIES}"
            )));
        }
        if threshold == 0 || 2 * u32::from(threshold) - 1 > u32::from(parties) {
            return Err(Error::InvalidParameters(format!(
                "threshold {threshold} with {parties} parties: dealer-free generation needs an \
                 honest majority, 1 ≤ t and 2t − 1 ≤ n"
            )));
        }
        // Expected candidate pairs ≈ (ln 2^(bits/2) / 2)² without sieving; two batches' worth
        // of that split in halves keeps memory flat and rarely wastes a round.
        let h = f64::from(bits / 2) * core::f64::consts::LN_2 / 2.0;
        let batch = ((h * h / 2.0) as usize).clamp(256, 1 << 15);
        let params = Parameters {
            bits,
            parties,
            threshold,
            session,
            batch,
            biprime_reps: DEFAULT_BIPRIME_REPS,
            insecure_reps: false,
        };
        // The key stage's committed integers must fit the Pedersen group twice over
        // (docs/dkg.md, "Break 1"): refused here, not after the modulus stage.
        let setup = Setup::new(&params);
        product::check_group_fits(&setup)?;
        certify::check_group_fits(&setup)?;
        Ok(params)
    }

    /// The repetitions the soundness target requires with `batch` candidates per batch:
    /// `SOUNDNESS_BITS + ⌈log₂(MAX_BATCHES · batch)⌉`. Every modulus a run tests went through
    /// at least the first repetition, and a run tests at most `MAX_BATCHES · batch` of them, so
    /// by the union bound a non-biprime is accepted with probability at most
    /// `MAX_BATCHES · batch · 2^−r ≤ 2^−SOUNDNESS_BITS`.
    pub fn required_biprime_reps(batch: usize) -> u32 {
        SOUNDNESS_BITS + ceil_log2(MAX_BATCHES as usize * batch.max(1)) as u32
    }

    /// `−log₂` of the bound on accepting a non-biprime over a whole run with these parameters
    /// (`r − ⌈log₂(MAX_BATCHES · batch)⌉`).
    pub fn soundness_bits(&self) -> u32 {
        let tested = ceil_log2(MAX_BATCHES as usize * self.batch.max(1)) as u32;
        self.biprime_reps.saturating_sub(tested)
    }

    fn check_soundness(self) -> Result<Self> {
        if !self.insecure_reps && self.soundness_bits() < SOUNDNESS_BITS {
            return Err(Error::InvalidParameters(format!(
                "{} biprimality repetitions with batches of {}: at least {} are needed for a \
                 2^-{SOUNDNESS_BITS} error over {MAX_BATCHES} batches",
                self.biprime_reps,
                self.batch,
                Self::required_biprime_reps(self.batch)
            )));
        }
        Ok(self)
    }

    /// Candidates per batch (default: about half the expected number).
    pub fn with_batch(mut self, batch: usize) -> Result<Self> {
        if !(1..=1 << 20).contains(&batch) {
            return Err(Error::InvalidParameters(format!(
                "batch of {batch} candidates"
            )));
        }
        self.batch = batch;
        self.check_soundness()
    }

    /// Repetitions of the biprimality test (default [`DEFAULT_BIPRIME_REPS`]; a non-biprime
    /// passes each with probability at most 1/2). Refuses fewer than
    /// [`Parameters::required_biprime_reps`] for the batch size.
    pub fn with_biprime_reps(mut self, reps: u32) -> Result<Self> {
        if !(2..=256).contains(&reps) {
            return Err(Error::InvalidParameters(format!(
                "{reps} biprimality repetitions"
            )));
        }
        self.biprime_reps = reps;
        self.check_soundness()
    }

    /// **Insecure, for tests and measurements only**: sets the repetitions without the
    /// soundness check, so a non-biprime modulus may be accepted with probability up to
    /// `MAX_BATCHES · batch · 2^−reps`. A transcript replayed by the ceremony goes through
    /// [`Parameters::with_biprime_reps`] and refuses such parameters.
    pub fn insecure_with_biprime_reps_for_tests(mut self, reps: u32) -> Result<Self> {
        if !(2..=256).contains(&reps) {
            return Err(Error::InvalidParameters(format!(
                "{reps} biprimality repetitions"
            )));
        }
        self.biprime_reps = reps;
        self.insecure_reps = true;
        Ok(self)
    }

    /// Modulus size in bits.
    pub fn bits(&self) -> u32 {
        self.bits
    }

    /// Number of parties n.
    pub fn parties(&self) -> u16 {
        self.parties
    }

    /// Threshold t.
    pub fn threshold(&self) -> u16 {
        self.threshold
    }

    /// The session identifier.
    pub fn session(&self) -> [u8; 32] {
        self.session
    }

    /// Candidates per batch.
    pub fn batch(&self) -> usize {
        self.batch
    }

    /// Biprimality-test repetitions.
    pub fn biprime_reps(&self) -> u32 {
        self.biprime_reps
    }
}

/// One group of sieve primes and their product.
#[derive(Debug)]
struct SieveGroup {
    modulus: u64,
    primes: Vec<u64>,
}

/// Everything derived from the parameters that every party computes identically.
#[derive(Debug)]
struct Setup {
    params: Parameters,
    n: u16,
    t: u16,
    half: usize,
    /// Bits of the random part `u` of each `p_i = 4u (+ offset)`.
    u_bits: usize,
    groups: Vec<SieveGroup>,
    /// Primes in `[SIEVE_BOUND, 2^16)` packed into products below 2^64.
    trial_packs: Vec<(u64, Vec<u64>)>,
    /// The ring of M3's consistency check (above every integer share and product of M3).
    modulus_field: ShareRing,
    gcd_field: ShareRing,
    delta: Int,
    /// The product parties `S = {1, …, 2t − 1}`.
    product_parties: Vec<u16>,
    lagrange127: Vec<u128>,
    int_lagrange: Vec<Int>,
    sizes: Sizes,
}

/// Bit sizes of the key stage's integer sharings (see `docs/dkg.md`, "Sizes").
#[derive(Debug, Clone, Copy)]
struct Sizes {
    /// Coefficients of the φ sharing.
    f_coeff: usize,
    /// β_i.
    beta: usize,
    /// Coefficients of the β sharing.
    b_coeff: usize,
    /// Coefficients of the θ mask, and the bits of its ρ_i.
    mask_coeff: usize,
    mask_rho: usize,
    /// Bound on `|e_j| = |Δ·λ'_j·F(j)B(j)|`, the constant a product party reshares in K3.
    e_bits: usize,
    /// Coefficients of the resharing polynomials.
    g_coeff: usize,
    /// Bound on every key share.
    share: usize,
    /// The gcd step: r_i and ρ_i.
    gcd_r: usize,
    gcd_rho: usize,
    /// M3: coefficients of the `p_i`, `q_i` sharings and the bound on their shares.
    m_coeff: usize,
    m_share: usize,
    /// M3: coefficients of the zero sharing and the bound on its shares.
    m_zero_coeff: usize,
    m_zero_share: usize,
    /// M4: bound on a product party's `y_j = P(j)Q(j) + Z(j)`.
    m_product: usize,
}

fn ceil_log2(x: usize) -> usize {
    (usize::BITS - x.saturating_sub(1).leading_zeros()) as usize
}

impl Setup {
    fn new(params: &Parameters) -> Arc<Setup> {
        let (n, t) = (params.parties, params.threshold);
        let bits = params.bits as usize;
        let half = bits / 2;
        let logn = ceil_log2(usize::from(n) + 1);
        let mut groups = Vec::new();
        let mut current = SieveGroup {
            modulus: 1,
            primes: Vec::new(),
        };
        for l in primes_below(SIEVE_BOUND as usize).into_iter().skip(1) {
            if current.modulus * l > GROUP_LIMIT {
                groups.push(current);
                current = SieveGroup {
                    modulus: 1,
                    primes: Vec::new(),
                };
            }
            current.modulus *= l;
            current.primes.push(l);
        }
        groups.push(current);
        let mut trial_packs = Vec::new();
        let mut pack: (u64, Vec<u64>) = (1, Vec::new());
        for l in primes_below(TRIAL_BOUND)
            .into_iter()
            .filter(|&l| l >= SIEVE_BOUND)
        {
            match pack.0.checked_mul(l) {
                Some(m) => {
                    pack.0 = m;
                    pack.1.push(l);
                }
                None => {
                    trial_packs.push(pack);
                    pack = (l, vec![l]);
                }
            }
        }
        trial_packs.push(pack);

        let delta = factorial(n);
        let dbits = delta.bits();
        let product_parties: Vec<u16> = (1..=2 * t - 1).collect();
        let int_lagrange = integer_lagrange(&product_parties, &delta);
        let lbits = int_lagrange.iter().map(Int::bits).max().unwrap_or(1);
        let spread = usize::from(t) * logn + 2;
        let f_coeff = bits + 2 + 2 * dbits + spread + STAT_BITS;
        let beta = bits + STAT_BITS;
        let b_coeff = beta + 2 * dbits + spread + STAT_BITS;
        let product = f_coeff + b_coeff + 2 * spread;
        let mask_coeff = product + spread + STAT_BITS;
        let mask_rho = product + STAT_BITS + 2 - bits.min(product);
        let e_bits = dbits + lbits + product;
        let g_coeff = e_bits + dbits + spread + STAT_BITS;
        let share = g_coeff + spread + ceil_log2(2 * usize::from(t)) + 2;
        let gcd_r = bits + STAT_BITS;
        let gcd_product = half + 2 + gcd_r + logn;
        let gcd_rho = gcd_product + STAT_BITS - bits.min(gcd_product) + 2;
        let gcd_field_bits = bits + gcd_rho + logn + 4;
        // M3's integer sharings (see `certify`): Δp_i < 2^(h + dbits) hidden by coefficients
        // 2^(spread + λ) times larger; the zero sharing masks every coefficient of P·Q
        // (t·n²·2^(2·m_coeff)) by 2^λ.
        let t_bits = |d: usize| ceil_log2(d + 1) + d * ceil_log2(usize::from(n) + 1) + 1;
        let m_coeff = half + 2 + 2 * dbits + spread + STAT_BITS;
        let m_share = m_coeff + t_bits(usize::from(t) - 1);
        let m_zero_coeff = 2 * m_coeff + 2 * logn + ceil_log2(usize::from(t)) + STAT_BITS;
        let m_zero_share = m_zero_coeff + t_bits(2 * usize::from(t) - 2);
        let m_product = (2 * (m_share + logn)).max(m_zero_share + logn) + 1;
        let modulus_field = ShareRing::above_power_of_two((bits + 1).max(m_product + 1));
        Arc::new(Setup {
            params: params.clone(),
            n,
            t,
            half,
            u_bits: half - 4 - ceil_log2(usize::from(n)),
            groups,
            trial_packs,
            modulus_field,
            gcd_field: ShareRing::above_power_of_two(gcd_field_bits),
            lagrange127: lagrange127(&product_parties),
            delta,
            product_parties,
            int_lagrange,
            sizes: Sizes {
                f_coeff,
                beta,
                b_coeff,
                mask_coeff,
                mask_rho,
                e_bits,
                g_coeff,
                share,
                gcd_r,
                gcd_rho,
                m_coeff,
                m_share,
                m_zero_coeff,
                m_zero_share,
                m_product,
            },
        })
    }

    fn is_product_party(&self, p: PartyIndex) -> bool {
        p.0 >= 1 && p.0 < 2 * self.t
    }
}

/// Counters a party keeps while it runs (for the benchmark and the ceremony's report).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Candidate batches started.
    pub batches: u32,
    /// Candidate pairs (p, q) sampled.
    pub candidates_tried: u64,
    /// Candidates left after distributed trial division (primes below 80).
    pub sieve_survivors: u64,
    /// Opened moduli left after public trial division (primes below 2^16).
    pub trial_survivors: u64,
    /// Moduli that passed the first biprimality repetition.
    pub first_test_survivors: u64,
    /// Rejected batches whose audit re-ran every party (a candidate of the batch had `p` and
    /// `q` both prime in the clear); the others were settled by the clear check alone.
    pub audit_reruns: u32,
}

/// The result of a successful generation, for one party.
#[derive(Debug)]
pub struct KeyOutput {
    /// The committee's public threshold key (identical at every party).
    pub key: ThresholdPublicKey,
    /// This party's key share.
    pub share: KeyShare,
    /// What this party counted on the way.
    pub stats: Stats,
}

/// The result of delivering one round's messages.
#[derive(Debug)]
pub enum Step {
    /// The protocol goes on: send `Outgoing`, then deliver the next round's messages.
    Continue(Box<Party>, Outgoing),
    /// Done.
    Done(Box<KeyOutput>),
}

impl State {
    /// Whether the party waits for a round of a candidate batch (M1–M9), whose broadcasts it
    /// keeps for the batch's audit.
    fn in_batch(&self) -> bool {
        matches!(
            self,
            State::Sieve(_)
                | State::SieveProducts(_)
                | State::Candidates(_)
                | State::Moduli(_)
                | State::BiprimeFirstCommit(_)
                | State::BiprimeFirst(_)
                | State::BiprimeCommit(_)
                | State::BiprimeReveal(_)
                | State::Gcd(_)
                | State::GcdReveal(_)
        )
    }
}

/// What a party is waiting for.
#[derive(Debug)]
enum State {
    Sieve(modulus::SieveRound),
    SieveProducts(modulus::SieveProductRound),
    Candidates(modulus::CandidateRound),
    Moduli(modulus::ModulusRound),
    BiprimeFirstCommit(modulus::FirstCommitRound),
    BiprimeFirst(modulus::FirstTestRound),
    BiprimeCommit(modulus::CommitRound),
    BiprimeReveal(modulus::RevealRound),
    Gcd(Box<modulus::GcdRound>),
    GcdReveal(Box<modulus::GcdRevealRound>),
    CertifyCommit(Box<certify::CommitRound>),
    CertifyComplaints(Box<certify::ComplaintRound>),
    CertifyReveals(Box<certify::RevealRound>),
    CertifyProducts(Box<certify::ProductRound>),
    Audit(modulus::AuditRound),
    Key1(Box<key::Round1>),
    Key1b(Box<key::Round1b>),
    Key1c(Box<key::Round1c>),
    Key2(key::Round2),
    Key3(Box<key::Round3>),
    Key3b(Box<key::Round3b>),
    Key3c(Box<key::Round3c>),
    Key4(key::Round4),
}

enum Transition {
    Next(State, Outgoing),
    Done(ThresholdPublicKey, KeyShare),
}

/// One party of the key generation: a state machine fed one round's messages at a time.
#[derive(Debug)]
pub struct Party {
    setup: Arc<Setup>,
    me: PartyIndex,
    state: State,
    stats: Stats,
    /// Every broadcast received in the current batch, for the audit should the batch be
    /// rejected (module `audit`); empty for a party the audit re-runs.
    log: Vec<Message>,
    /// False for a party the audit re-runs from its opened seed (no log, no test hooks).
    live: bool,
}

/// A party's view of the messages of the round it is in.
pub(crate) struct Inbox {
    round: Round,
    broadcast: BTreeMap<u16, Message>,
    direct: BTreeMap<u16, Message>,
}

impl Inbox {
    /// The direct message from `from`, if it came (rounds whose shares can be complained
    /// about: see [`Party::tolerates_missing_directs`]).
    fn direct(&self, from: u16) -> Option<&Message> {
        self.direct.get(&from)
    }

    /// Refuses a message from a party with no part in the round: a broadcast from one not in
    /// `bfrom`, a direct message from one not in `dfrom` (before, an unexpected broadcast was
    /// ignored by the round but kept in the transcript, which then failed to verify with nobody
    /// named).
    fn check_roles(&self, bfrom: &[PartyIndex], dfrom: &[PartyIndex]) -> Result<()> {
        for (slot, allowed, what) in [
            (&self.broadcast, bfrom, "a broadcast"),
            (&self.direct, dfrom, "a direct message"),
        ] {
            if let Some(m) = slot.values().find(|m| !allowed.contains(&m.from)) {
                return Err(blame(m, format!("{what} in a round it has no part in")));
            }
        }
        Ok(())
    }

    /// The broadcast of every party in `from`, or an error naming the first that is missing.
    fn broadcasts(&self, from: impl IntoIterator<Item = u16>) -> Result<Vec<&Message>> {
        from.into_iter()
            .map(|p| {
                self.broadcast.get(&p).ok_or_else(|| Error::Misbehaviour {
                    party: PartyIndex(p),
                    round: self.round,
                    reason: "no broadcast received".into(),
                })
            })
            .collect()
    }

    /// The direct message from every party in `from` to this party.
    fn directs(&self, from: impl IntoIterator<Item = u16>) -> Result<Vec<&Message>> {
        from.into_iter()
            .map(|p| {
                self.direct.get(&p).ok_or_else(|| Error::Misbehaviour {
                    party: PartyIndex(p),
                    round: self.round,
                    reason: "no direct message received".into(),
                })
            })
            .collect()
    }
}

pub(crate) fn blame(m: &Message, reason: impl Into<String>) -> Error {
    Error::Misbehaviour {
        party: m.from,
        round: m.round,
        reason: reason.into(),
    }
}

impl Party {
    /// Starts party `me` (1-based) and returns its first messages.
    pub fn new<R: RngCore + CryptoRng + ?Sized>(
        params: &Parameters,
        me: PartyIndex,
        rng: &mut R,
    ) -> Result<(Party, Outgoing)> {
        if me.0 == 0 || me.0 > params.parties {
            return Err(Error::UnknownParty {
                party: me,
                parties: params.parties,
            });
        }
        let setup = Setup::new(params);
        let mut stats = Stats::default();
        let seed = audit::BatchSeed::fresh(&setup, 0, me, rng);
        let (state, out) = modulus::start_batch(&setup, me, 0, &mut stats, seed);
        Ok((
            Party {
                setup,
                me,
                state,
                stats,
                log: Vec::new(),
                live: true,
            },
            out,
        ))
    }

    /// This party's index.
    pub fn index(&self) -> PartyIndex {
        self.me
    }

    /// The counters so far.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// The round whose messages the party waits for.
    pub fn round(&self) -> Round {
        match &self.state {
            State::Sieve(_) => Round::SieveShares,
            State::SieveProducts(_) => Round::SieveProducts,
            State::Candidates(_) => Round::CandidateShares,
            State::Moduli(_) => Round::ModulusShares,
            State::BiprimeFirstCommit(_) => Round::BiprimeFirstCommit,
            State::BiprimeFirst(_) => Round::BiprimeFirst,
            State::BiprimeCommit(_) => Round::BiprimeCommit,
            State::BiprimeReveal(_) => Round::BiprimeReveal,
            State::Gcd(_) => Round::GcdShares,
            State::GcdReveal(_) => Round::GcdReveal,
            State::CertifyCommit(_) => Round::CertifyCommit,
            State::CertifyComplaints(_) => Round::CertifyComplaints,
            State::CertifyReveals(_) => Round::CertifyReveals,
            State::CertifyProducts(_) => Round::CertifyProducts,
            State::Audit(_) => Round::BatchAudit,
            State::Key1(_) => Round::KeyShares,
            State::Key1b(_) => Round::KeyComplaints,
            State::Key1c(_) => Round::KeyAnswers,
            State::Key3b(_) => Round::ReshareComplaints,
            State::Key3c(_) => Round::ReshareAnswers,
            State::Key2(_) => Round::MaskedProduct,
            State::Key3(_) => Round::Reshare,
            State::Key4(_) => Round::TestDecryption,
        }
    }

    /// Whose messages the current round needs: broadcasts from these parties and direct messages
    /// (to this party) from those. A transport waits for exactly these before calling
    /// [`Party::receive`], buffering messages of later rounds.
    pub fn expects(&self) -> (Vec<PartyIndex>, Vec<PartyIndex>) {
        let all: Vec<PartyIndex> = (1..=self.setup.n).map(PartyIndex).collect();
        let s: Vec<PartyIndex> = self
            .setup
            .product_parties
            .iter()
            .map(|&p| PartyIndex(p))
            .collect();
        match &self.state {
            State::Sieve(_) | State::Candidates(_) | State::Gcd(_) | State::CertifyCommit(_) => {
                (all.clone(), all)
            }
            State::Key2(_) | State::CertifyProducts(_) => (s, Vec::new()),
            State::SieveProducts(_)
            | State::Moduli(_)
            | State::GcdReveal(_)
            | State::BiprimeFirstCommit(_)
            | State::BiprimeFirst(_)
            | State::BiprimeCommit(_)
            | State::BiprimeReveal(_)
            | State::CertifyComplaints(_)
            | State::CertifyReveals(_)
            | State::Audit(_) => (all, Vec::new()),
            State::Key1(_) => (all.clone(), all),
            State::Key1b(_) | State::Key1c(_) | State::Key3b(_) => (all, Vec::new()),
            State::Key3c(_) => (s, Vec::new()),
            State::Key4(_) => (all, Vec::new()),
            State::Key3(_) => (s.clone(), s),
        }
    }

    /// Whether a missing direct message is not fatal in the current round (K1 and K3, whose
    /// shares are complained about in public): a transport delivers the round once every
    /// broadcast is in, and the party complains in public about a share that never came — its
    /// dealer must then answer it in public or be named by everyone. (A dealer sends its direct
    /// messages before its broadcast, so on an ordered channel they arrive first.)
    pub fn tolerates_missing_directs(&self) -> bool {
        matches!(self.state, State::Key1(_) | State::Key3(_))
    }

    /// The batch of the round the party waits for (0 in the key stage).
    pub fn batch(&self) -> u32 {
        match &self.state {
            State::Sieve(s) => s.batch,
            State::SieveProducts(s) => s.batch,
            State::Candidates(s) => s.batch,
            State::Moduli(s) => s.batch,
            State::BiprimeFirstCommit(s) => s.batch,
            State::BiprimeFirst(s) => s.batch,
            State::BiprimeCommit(s) => s.batch,
            State::BiprimeReveal(s) => s.batch,
            State::Gcd(s) => s.batch,
            State::GcdReveal(s) => s.batch,
            State::CertifyCommit(s) => s.batch,
            State::CertifyComplaints(s) => s.batch,
            State::CertifyReveals(s) => s.batch,
            State::CertifyProducts(s) => s.batch,
            State::Audit(s) => s.batch,
            State::Key1(_)
            | State::Key1b(_)
            | State::Key1c(_)
            | State::Key2(_)
            | State::Key3(_)
            | State::Key3b(_)
            | State::Key3c(_)
            | State::Key4(_) => 0,
        }
    }

    /// Delivers every message of the current round addressed to this party (broadcasts of all
    /// parties and direct messages to it, its own included) and runs the transition. Messages
    /// of another session, round or batch, for another party, duplicated, or from a party with
    /// no part in the round ([`Party::expects`]), are refused with the sender named.
    pub fn receive<R: RngCore + CryptoRng + ?Sized>(
        self,
        messages: Vec<Message>,
        rng: &mut R,
    ) -> Result<Step> {
        let round = self.round();
        let batch = self.batch();
        let (bfrom, dfrom) = self.expects();
        let mut inbox = Inbox {
            round,
            broadcast: BTreeMap::new(),
            direct: BTreeMap::new(),
        };
        for m in messages {
            if m.from.0 == 0 || m.from.0 > self.setup.n {
                return Err(Error::UnknownParty {
                    party: m.from,
                    parties: self.setup.n,
                });
            }
            if m.session != self.setup.params.session {
                return Err(blame(&m, "message of another session"));
            }
            if m.round != round || m.batch != batch {
                return Err(blame(
                    &m,
                    format!(
                        "message for round {:?} batch {}, expected {round:?} batch {batch}",
                        m.round, m.batch
                    ),
                ));
            }
            let slot = match m.to {
                None => &mut inbox.broadcast,
                Some(to) if to == self.me => &mut inbox.direct,
                Some(_) => return Err(blame(&m, "direct message for another party")),
            };
            if slot.contains_key(&m.from.0) {
                return Err(blame(&m, "two messages in one round"));
            }
            slot.insert(m.from.0, m);
        }
        inbox.check_roles(&bfrom, &dfrom)?;
        let Party {
            setup,
            me,
            state,
            mut stats,
            mut log,
            live,
        } = self;
        // A live party keeps the batch's broadcasts for its audit (a re-run one does not need
        // them: the audit stops where the batch was rejected).
        if live && state.in_batch() {
            log.extend(inbox.broadcast.values().cloned());
        }
        let ctx = Ctx {
            setup: &setup,
            me,
            live,
        };
        let transition = match state {
            State::Sieve(s) => s.receive(&ctx, &inbox, rng),
            State::SieveProducts(s) => s.receive(&ctx, &inbox, &mut stats),
            State::Candidates(s) => s.receive(&ctx, &inbox),
            State::Moduli(s) => s.receive(&ctx, &inbox, &mut stats),
            State::BiprimeFirstCommit(s) => s.receive(&ctx, &inbox),
            State::BiprimeFirst(s) => s.receive(&ctx, &inbox, &mut stats),
            State::BiprimeCommit(s) => s.receive(&ctx, &inbox),
            State::BiprimeReveal(s) => s.receive(&ctx, &inbox),
            State::Gcd(s) => s.receive(&ctx, &inbox),
            State::GcdReveal(s) => s.receive(&ctx, &inbox, rng),
            State::Audit(s) => s.receive(&setup, me, &inbox, &log, &mut stats, rng),
            State::CertifyCommit(s) => s.receive(&ctx, &inbox, rng),
            State::CertifyComplaints(s) => s.receive(&ctx, &inbox),
            State::CertifyReveals(s) => s.receive(&ctx, &inbox, rng),
            State::CertifyProducts(s) => s.receive(&ctx, &inbox, rng),
            State::Key1(s) => (*s).receive(&ctx, &inbox),
            State::Key1b(s) => s.receive(&ctx, &inbox),
            State::Key1c(s) => s.receive(&ctx, &inbox, rng),
            State::Key2(s) => s.receive(&ctx, &inbox, rng),
            State::Key3(s) => (*s).receive(&ctx, &inbox),
            State::Key3b(s) => s.receive(&ctx, &inbox),
            State::Key3c(s) => s.receive(&ctx, &inbox, rng),
            State::Key4(s) => s.receive(&ctx, &inbox),
        }?;
        Ok(match transition {
            Transition::Next(state, out) => {
                if !(state.in_batch() || matches!(state, State::Audit(_))) {
                    log = Vec::new();
                }
                let mut party = Party {
                    setup,
                    me,
                    state,
                    stats,
                    log,
                    live,
                };
                if party.batch() != batch {
                    party.log = Vec::new();
                }
                Step::Continue(Box::new(party), out)
            }
            Transition::Done(key, share) => Step::Done(Box::new(KeyOutput { key, share, stats })),
        })
    }
}

/// What every transition reads.
struct Ctx<'a> {
    setup: &'a Setup,
    me: PartyIndex,
    /// False in a party the batch audit re-runs (test hooks that play a cheater stay off there).
    #[cfg_attr(not(test), allow(dead_code))]
    live: bool,
}

impl Ctx<'_> {
    fn message(&self, round: Round, batch: u32, to: Option<u16>) -> Message {
        Message::new(
            self.setup.params.session,
            round,
            batch,
            self.me,
            to.map(PartyIndex),
        )
    }

    fn all(&self) -> impl Iterator<Item = u16> {
        1..=self.setup.n
    }

    fn product_parties(&self) -> impl Iterator<Item = u16> + '_ {
        self.setup.product_parties.iter().copied()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    /// Attacker review of the complaint rounds, finding 3: a party with no part in a round
    /// (here party 4, not a product party at n = 4, t = 2, sending a K3c answer) used to be
    /// ignored by the round but kept in the transcript, which then failed to verify with
    /// nobody named. It is now named on receipt.
    #[test]
    fn a_message_from_a_party_with_no_part_in_the_round_names_it() {
        let msg = |from: u16, to: Option<u16>| {
            Message::new(
                [1; 32],
                Round::ReshareAnswers,
                0,
                PartyIndex(from),
                to.map(PartyIndex),
            )
        };
        let s: Vec<PartyIndex> = (1..=3).map(PartyIndex).collect();
        let inbox = |b: &[u16], d: &[u16]| Inbox {
            round: Round::ReshareAnswers,
            broadcast: b.iter().map(|&p| (p, msg(p, None))).collect(),
            direct: d.iter().map(|&p| (p, msg(p, Some(1)))).collect(),
        };
        inbox(&[1, 2, 3], &[]).check_roles(&s, &[]).unwrap();
        let e = inbox(&[1, 2, 3, 4], &[]).check_roles(&s, &[]).unwrap_err();
        assert_eq!(e.culprits(), vec![PartyIndex(4)], "{e}");
        let e = inbox(&[1, 2, 3], &[2]).check_roles(&s, &[]).unwrap_err();
        assert_eq!(e.culprits(), vec![PartyIndex(2)], "{e}");
    }
}
