//! The hash behind the catalog's by-name lookup table.
//!
//! `build.rs` includes this very file (through `#[path]`) to pick a seed under
//! which every catalog name lands in its own slot, and the library uses it at
//! run time to find a name's slot. Keeping one copy guarantees that both agree.

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
    let mut word = [0u8; 8];
    word[..rest.len()].copy_from_slice(rest);
    h = (h ^ u64::from_le_bytes(word)).wrapping_mul(MUL);
    h ^ (h >> 32)
}
