//! A table keyed by monotonically increasing ids (jobs, requests): a ring of slots from
//! the oldest live id on, so insert, lookup and removal are O(1) with no hashing — the
//! pool does several of each per job.

use std::collections::VecDeque;

/// Values by `u64` id, for ids handed out in increasing order.
#[derive(Debug)]
pub(crate) struct IdTable<V> {
    base: u64,
    slots: VecDeque<Option<V>>,
    len: usize,
}

impl<V> Default for IdTable<V> {
    fn default() -> Self {
        IdTable {
            base: 0,
            slots: VecDeque::new(),
            len: 0,
        }
    }
}

impl<V> IdTable<V> {
    /// Stores `value` under `id`; ids below the oldest live one are refused (returned).
    pub(crate) fn insert(&mut self, id: u64, value: V) -> Option<V> {
        if self.slots.is_empty() {
            self.base = id;
        }
        if id < self.base {
            return Some(value);
        }
        let at = (id - self.base) as usize;
        if at >= self.slots.len() {
            self.slots.resize_with(at + 1, || None);
        }
        if self.slots[at].replace(value).is_none() {
            self.len += 1;
        }
        None
    }

    /// The value under `id`.
    pub(crate) fn get(&self, id: &u64) -> Option<&V> {
        let at = id.checked_sub(self.base)?;
        self.slots.get(usize::try_from(at).ok()?)?.as_ref()
    }

    /// The value under `id`, mutably.
    pub(crate) fn get_mut(&mut self, id: &u64) -> Option<&mut V> {
        let at = id.checked_sub(self.base)?;
        self.slots.get_mut(usize::try_from(at).ok()?)?.as_mut()
    }

    /// Takes the value under `id` out.
    pub(crate) fn remove(&mut self, id: &u64) -> Option<V> {
        let at = usize::try_from(id.checked_sub(self.base)?).ok()?;
        let value = self.slots.get_mut(at)?.take()?;
        self.len -= 1;
        while matches!(self.slots.front(), Some(None)) {
            self.slots.pop_front();
            self.base += 1;
        }
        Some(value)
    }

    /// Live values.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Live ids and values, oldest first.
    #[cfg(test)]
    pub(crate) fn iter(&self) -> impl Iterator<Item = (u64, &V)> {
        let base = self.base;
        self.slots
            .iter()
            .enumerate()
            .filter_map(move |(i, v)| v.as_ref().map(|v| (base + i as u64, v)))
    }

    /// Live values, oldest first.
    pub(crate) fn values(&self) -> impl Iterator<Item = &V> {
        self.slots.iter().filter_map(Option::as_ref)
    }

    /// Live ids, oldest first.
    #[cfg(test)]
    pub(crate) fn keys(&self) -> impl Iterator<Item = u64> + '_ {
        self.iter().map(|(k, _)| k)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    #[test]
    fn inserts_finds_and_forgets() {
        let mut t = IdTable::default();
        for id in 10..20 {
            assert!(t.insert(id, id * 2).is_none());
        }
        assert_eq!(t.len(), 10);
        assert_eq!(t.get(&15), Some(&30));
        assert_eq!(t.remove(&10), Some(20));
        assert_eq!(t.remove(&10), None);
        assert_eq!(t.get(&9), None);
        assert_eq!(
            t.insert(5, 0),
            Some(0),
            "ids below the oldest live one are refused"
        );
        *t.get_mut(&19).unwrap() = 1;
        assert_eq!(t.keys().collect::<Vec<_>>(), (11..20).collect::<Vec<_>>());
        assert_eq!(t.get(&19), Some(&1));
    }

    proptest! {
        #[test]
        fn behaves_like_a_map(ops in proptest::collection::vec((0u8..3, 0u64..64), 0..300)) {
            let mut t = IdTable::default();
            let mut m = BTreeMap::new();
            let mut next = 0u64;
            for (op, k) in ops {
                match op {
                    0 => { t.insert(next, next); m.insert(next, next); next += 1; }
                    1 => prop_assert_eq!(t.remove(&k), m.remove(&k)),
                    _ => prop_assert_eq!(t.get(&k), m.get(&k)),
                }
                prop_assert_eq!(t.len(), m.len());
            }
            prop_assert_eq!(t.iter().map(|(k, v)| (k, *v)).collect::<Vec<_>>(),
                            m.iter().map(|(k, v)| (*k, *v)).collect::<Vec<_>>());
        }
    }
}
