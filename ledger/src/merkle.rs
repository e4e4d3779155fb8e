//! The tamper-evident log: an RFC 6962 / RFC 9162 Merkle tree over the ledger's applied entries,
//! with inclusion and consistency proofs.
//!
//! * Leaf hash `H(0x00 ‖ d)`, node hash `H(0x01 ‖ l ‖ r)`, `H` = SHA-256; the empty tree's root is
//!   `H("")` (RFC 6962 §2.1).
//! * `MTH(D[0:n])` splits at `k`, the largest power of two below `n` (§2.1).
//! * Inclusion path `PATH(m, D[n])` (§2.1.1) and consistency proof `PROOF(m, D[n])` (§2.1.2);
//!   verification by the algorithms of RFC 9162 §2.1.3.2 and §2.1.4.2, which need only the two
//!   roots, the sizes and the proof.
//!
//! [`MerkleLog`] keeps the hash of every *perfect* subtree (level `k` holds the roots of the
//! aligned subtrees of `2^k` leaves), so an append updates at most `log₂ n` levels and any
//! `MTH(D[a:b])` needed by a proof is assembled from `O(log n)` stored hashes.

use sha2::{Digest, Sha256};

/// A SHA-256 hash.
pub type Hash = [u8; 32];

/// Why a proof or a request was refused.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProofError {
    /// An index or size outside the tree.
    #[error("index {index} is not below tree size {size}")]
    OutOfRange {
        /// The index (or old size) asked for.
        index: u64,
        /// The tree size.
        size: u64,
    },
    /// The proof does not lead to the given root(s).
    #[error("proof does not verify: {0}")]
    Invalid(&'static str),
}

/// `H(0x00 ‖ data)`.
pub fn leaf_hash(data: &[u8]) -> Hash {
    let mut h = Sha256::new();
    h.update([0u8]);
    h.update(data);
    h.finalize().into()
}

/// `H(0x01 ‖ left ‖ right)`.
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut h = Sha256::new();
    h.update([1u8]);
    h.update(left);
    h.update(right);
    h.finalize().into()
}

/// The root of the empty tree, `H("")`.
pub fn empty_root() -> Hash {
    Sha256::digest([]).into()
}

/// Largest power of two strictly below `n` (`n ≥ 2`).
fn split(n: u64) -> u64 {
    debug_assert!(n >= 2);
    1 << (63 - (n - 1).leading_zeros())
}

/// An append-only Merkle log held in memory.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MerkleLog {
    /// `levels[k][i]` = root of leaves `[i·2^k, (i+1)·2^k)`.
    levels: Vec<Vec<Hash>>,
}

impl MerkleLog {
    /// An empty log.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of leaves.
    pub fn size(&self) -> u64 {
        self.levels.first().map_or(0, |l| l.len() as u64)
    }

    /// Appends an entry; returns its index.
    pub fn append(&mut self, data: &[u8]) -> u64 {
        self.append_leaf_hash(leaf_hash(data))
    }

    /// Appends a precomputed leaf hash; returns its index.
    pub fn append_leaf_hash(&mut self, leaf: Hash) -> u64 {
        let index = self.size();
        let mut level = 0;
        let mut hash = leaf;
        loop {
            if self.levels.len() == level {
                self.levels.push(Vec::new());
            }
            self.levels[level].push(hash);
            let len = self.levels[level].len();
            // A new perfect subtree at the next level exists when this level's length is even.
            if len % 2 == 1 {
                break;
            }
            hash = node_hash(&self.levels[level][len - 2], &self.levels[level][len - 1]);
            level += 1;
        }
        index
    }

    /// The leaf hash at `index`.
    pub fn leaf(&self, index: u64) -> Option<Hash> {
        self.levels
            .first()?
            .get(usize::try_from(index).ok()?)
            .copied()
    }

    /// `MTH(D[start:end])` for `start < end ≤ size`, from stored perfect subtrees.
    fn range_hash(&self, start: u64, end: u64) -> Hash {
        let n = end - start;
        if n.is_power_of_two() && start.is_multiple_of(n) {
            let level = n.trailing_zeros() as usize;
            return self.levels[level][(start / n) as usize];
        }
        let k = split(n);
        node_hash(
            &self.range_hash(start, start + k),
            &self.range_hash(start + k, end),
        )
    }

    /// The root at the current size.
    pub fn root(&self) -> Hash {
        self.root_at(self.size()).unwrap_or_else(|_| empty_root())
    }

    /// The root the log had at `size` (any size up to the current one).
    pub fn root_at(&self, size: u64) -> Result<Hash, ProofError> {
        if size > self.size() {
            return Err(ProofError::OutOfRange {
                index: size,
                size: self.size(),
            });
        }
        Ok(if size == 0 {
            empty_root()
        } else {
            self.range_hash(0, size)
        })
    }

    /// The inclusion path of leaf `index` in the tree of size `size` (RFC 6962 §2.1.1).
    pub fn inclusion_proof(&self, index: u64, size: u64) -> Result<Vec<Hash>, ProofError> {
        if index >= size || size > self.size() {
            return Err(ProofError::OutOfRange {
                index,
                size: size.min(self.size()),
            });
        }
        let mut proof = Vec::new();
        self.path(index, 0, size, &mut proof);
        Ok(proof)
    }

    fn path(&self, m: u64, start: u64, end: u64, out: &mut Vec<Hash>) {
        let n = end - start;
        if n == 1 {
            return;
        }
        let k = split(n);
        if m < k {
            self.path(m, start, start + k, out);
            out.push(self.range_hash(start + k, end));
        } else {
            self.path(m - k, start + k, end, out);
            out.push(self.range_hash(start, start + k));
        }
    }

    /// The consistency proof from the tree of size `old` to the tree of size `new`
    /// (RFC 6962 §2.1.2). Empty when `old` is 0 or equal to `new`.
    pub fn consistency_proof(&self, old: u64, new: u64) -> Result<Vec<Hash>, ProofError> {
        if old > new || new > self.size() {
            return Err(ProofError::OutOfRange {
                index: old,
                size: new.min(self.size()),
            });
        }
        let mut proof = Vec::new();
        if old > 0 && old < new {
            self.subproof(old, 0, new, true, &mut proof);
        }
        Ok(proof)
    }

    fn subproof(&self, m: u64, start: u64, end: u64, whole: bool, out: &mut Vec<Hash>) {
        let n = end - start;
        if m == n {
            if !whole {
                out.push(self.range_hash(start, end));
            }
            return;
        }
        let k = split(n);
        if m <= k {
            self.subproof(m, start, start + k, whole, out);
            out.push(self.range_hash(start + k, end));
        } else {
            self.subproof(m - k, start + k, end, false, out);
            out.push(self.range_hash(start, start + k));
        }
    }
}

/// Verifies that `leaf` is at `index` in the tree of `size` with root `root`
/// (RFC 9162 §2.1.3.2).
///
/// The proof binds the leaf and its index to the root; the *size* only fixes the path's shape.
/// Take `(size, root)` from a signed checkpoint, never from the prover, as RFC 9162 requires.
pub fn verify_inclusion(
    leaf: &Hash,
    index: u64,
    size: u64,
    proof: &[Hash],
    root: &Hash,
) -> Result<(), ProofError> {
    if index >= size {
        return Err(ProofError::OutOfRange { index, size });
    }
    let (mut fnode, mut snode) = (index, size - 1);
    let mut r = *leaf;
    for p in proof {
        if snode == 0 {
            return Err(ProofError::Invalid(
                "inclusion path longer than the tree is deep",
            ));
        }
        if fnode & 1 == 1 || fnode == snode {
            r = node_hash(p, &r);
            if fnode & 1 == 0 {
                while fnode & 1 == 0 && fnode != 0 {
                    fnode >>= 1;
                    snode >>= 1;
                }
            }
        } else {
            r = node_hash(&r, p);
        }
        fnode >>= 1;
        snode >>= 1;
    }
    if snode != 0 {
        return Err(ProofError::Invalid(
            "inclusion path shorter than the tree is deep",
        ));
    }
    if r != *root {
        return Err(ProofError::Invalid("inclusion path leads to another root"));
    }
    Ok(())
}

/// Verifies that the tree of size `new` with root `new_root` extends the tree of size `old` with
/// root `old_root` (RFC 9162 §2.1.4.2): the log only ever appended.
pub fn verify_consistency(
    old: u64,
    new: u64,
    proof: &[Hash],
    old_root: &Hash,
    new_root: &Hash,
) -> Result<(), ProofError> {
    if old > new {
        return Err(ProofError::OutOfRange {
            index: old,
            size: new,
        });
    }
    if old == new {
        return if proof.is_empty() && old_root == new_root {
            Ok(())
        } else {
            Err(ProofError::Invalid(
                "equal sizes need equal roots and an empty proof",
            ))
        };
    }
    if old == 0 {
        // Every tree extends the empty tree.
        return if proof.is_empty() {
            Ok(())
        } else {
            Err(ProofError::Invalid(
                "a proof from the empty tree must be empty",
            ))
        };
    }
    if proof.is_empty() {
        return Err(ProofError::Invalid("empty consistency proof"));
    }
    let mut path: Vec<Hash> = Vec::with_capacity(proof.len() + 1);
    if old.is_power_of_two() {
        path.push(*old_root);
    }
    path.extend_from_slice(proof);
    let (mut fnode, mut snode) = (old - 1, new - 1);
    while fnode & 1 == 1 {
        fnode >>= 1;
        snode >>= 1;
    }
    let (mut fr, mut sr) = (path[0], path[0]);
    for c in &path[1..] {
        if snode == 0 {
            return Err(ProofError::Invalid("consistency proof too long"));
        }
        if fnode & 1 == 1 || fnode == snode {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
            if fnode & 1 == 0 {
                while fnode & 1 == 0 && fnode != 0 {
                    fnode >>= 1;
                    snode >>= 1;
                }
            }
        } else {
            sr = node_hash(&sr, c);
        }
        fnode >>= 1;
        snode >>= 1;
    }
    if snode != 0 {
        return Err(ProofError::Invalid("consistency proof too short"));
    }
    if fr != *old_root || sr != *new_root {
        return Err(ProofError::Invalid(
            "consistency proof leads to other roots",
        ));
    }
    Ok(())
}
