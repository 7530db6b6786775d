//! The hasher of the maps on every message's path: the records' keys, the run config, and
//! the state's in-flight and per-node maps.
//!
//! std's SipHash costs ~100 instructions for a short key; a simulation hashes a handful of
//! keys per message and a million messages a round, which made hashing a tenth of a
//! million-node round. foldhash is several times cheaper and is seeded afresh in each
//! process, so keys that arrive from the network (record names, message ids) cannot be
//! chosen to collide ahead of time.

/// The `BuildHasher` of these maps.
pub type FastState = foldhash::fast::RandomState;

/// A `HashMap` with [`FastState`].
pub type FastHashMap<K, V> = std::collections::HashMap<K, V, FastState>;

/// A `HashSet` with [`FastState`].
pub type FastHashSet<K> = std::collections::HashSet<K, FastState>;

/// An insertion-ordered `IndexMap` with [`FastState`].
pub type FastIndexMap<K, V> = indexmap::IndexMap<K, V, FastState>;
