//! The hash behind the catalog's by-name lookup table.
//!
//! Every [`CatalogTable`](crate::catalog::CatalogTable) picks, when it is
//! built, a seed under which each of its names lands in a slot of its own,
//! and then finds a name's slot with the same function.

/// Hashes `name` with `seed`, eight bytes at a time.
///
/// Names are short (AIP-193 caps them at 63 bytes), so this is a handful of
/// multiplications: no allocation, no table walk.
pub(crate) fn name_hash(seed: u64, name: &[u8]) -> u64 {
    const MUL: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut h = seed ^ (name.len() as u64).wrapping_mul(MUL);
    let mut chunks = name.chunks_exact(8);
    for chunk in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        h = (h ^ u64::from_le_bytes(word))
            .wrapping_mul(MUL)
            .rotate_left(29);
    }
    let rest = chunks.remainder();
    // The tail: for names of 8 bytes or more, the last 8 bytes (overlapping
    // the last chunk), which costs one load instead of a short copy.
    let tail = if name.len() >= 8 {
        let mut word = [0u8; 8];
        word.copy_from_slice(&name[name.len() - 8..]);
        u64::from_le_bytes(word)
    } else {
        rest.iter()
            .enumerate()
            .fold(0u64, |w, (i, b)| w | u64::from(*b) << (8 * i))
    };
    h = (h ^ tail).wrapping_mul(MUL);
    h ^ (h >> 32)
}
