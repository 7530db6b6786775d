//! Node ids of a virtual fleet, computed instead of stored.
//!
//! Virtual node `i` has id `mix(i + 1)`, where `mix` is a bijection on u64 (the splitmix64
//! finaliser). Ids look random, as Flower's do, and are never 0 (the SuperLink's id); the
//! fleet recovers a node's partition index with the inverse, so a million idle nodes cost
//! no per-node memory at all.

/// The id of virtual node `index`.
pub fn node_id(index: u64) -> u64 {
    floret_core::seeded::mix(index.wrapping_add(1))
}

/// The index of the virtual node with id `id`; the inverse of `node_id`.
pub fn node_index(id: u64) -> u64 {
    let mut z = unshift(id, 31);
    z = unshift(z.wrapping_mul(0x3196_42b2_d24d_8ec3), 27);
    z = unshift(z.wrapping_mul(0x96de_1b17_3f11_9089), 30);
    z.wrapping_sub(1)
}

/// Inverts `x ^ (x >> s)`.
fn unshift(y: u64, s: u32) -> u64 {
    let mut x = y;
    let mut shift = s;
    while shift < 64 {
        x = y ^ (x >> s);
        shift += s;
    }
    x
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_and_id_are_inverse() {
        for i in (0..10_000).chain([u64::MAX - 1, 1 << 40, 999_999]) {
            assert_eq!(node_index(node_id(i)), i);
        }
    }

    #[test]
    fn ids_are_distinct_and_never_zero() {
        let mut ids: Vec<u64> = (0..100_000).map(node_id).collect();
        assert!(ids.iter().all(|&id| id != 0));
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), 100_000);
    }
}
