//! The bounded reorder buffer: `(pos, result)` pairs go in in any order, results come out
//! in position order. Pure, no I/O; the pool keeps at most `capacity` positions ahead of
//! the next one it must yield, so memory is bounded by the in-flight window, not the input.

use std::collections::VecDeque;

/// Why a result could not be taken in.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReorderError {
    /// The position was already yielded or already holds a result.
    #[error("result for position {0} arrived twice")]
    Duplicate(u64),
    /// The position is further ahead than the window allows.
    #[error("result for position {pos} is outside the window [{next}, {next} + {capacity})")]
    OutsideWindow {
        /// The offending position.
        pos: u64,
        /// The next position to yield.
        next: u64,
        /// The window.
        capacity: usize,
    },
}

/// Restores input order of results that complete out of order.
#[derive(Debug)]
pub struct Reorder<R> {
    next: u64,
    slots: VecDeque<Option<R>>,
    held: usize,
    capacity: usize,
}

impl<R> Reorder<R> {
    /// A buffer expecting position 0 first, holding at most `capacity` (>= 1) positions ahead.
    pub fn new(capacity: usize) -> Reorder<R> {
        Reorder {
            next: 0,
            slots: VecDeque::new(),
            held: 0,
            capacity: capacity.max(1),
        }
    }

    /// The next position to be yielded.
    pub fn next_pos(&self) -> u64 {
        self.next
    }

    /// Results held, waiting for an earlier position.
    #[cfg(test)]
    pub fn held(&self) -> usize {
        self.held
    }

    /// Widens the window (never narrows it below what is held).
    pub fn grow_capacity(&mut self, capacity: usize) {
        self.capacity = self.capacity.max(capacity);
    }

    /// Takes in the result for `pos`.
    pub fn push(&mut self, pos: u64, result: R) -> Result<(), ReorderError> {
        if pos < self.next {
            return Err(ReorderError::Duplicate(pos));
        }
        let offset = pos - self.next;
        if offset >= self.capacity as u64 {
            return Err(ReorderError::OutsideWindow {
                pos,
                next: self.next,
                capacity: self.capacity,
            });
        }
        let offset = offset as usize;
        if self.slots.len() <= offset {
            self.slots.resize_with(offset + 1, || None);
        }
        let slot = &mut self.slots[offset];
        if slot.is_some() {
            return Err(ReorderError::Duplicate(pos));
        }
        *slot = Some(result);
        self.held += 1;
        Ok(())
    }

    /// Whether the next position's result is here.
    pub fn ready(&self) -> bool {
        matches!(self.slots.front(), Some(Some(_)))
    }

    /// Yields the next result in order, if it has arrived.
    pub fn pop(&mut self) -> Option<R> {
        if !self.ready() {
            return None;
        }
        let result = self.slots.pop_front().flatten();
        self.next += 1;
        self.held -= 1;
        result
    }

    /// Skips the next position without a result (the caller accounted for it elsewhere).
    #[cfg(test)]
    pub fn skip(&mut self) {
        if let Some(slot) = self.slots.pop_front() {
            if slot.is_some() {
                self.held -= 1;
            }
        }
        self.next += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn restores_order() {
        let mut r = Reorder::new(8);
        r.push(2, 'c').unwrap();
        r.push(1, 'b').unwrap();
        assert_eq!(r.pop(), None);
        r.push(0, 'a').unwrap();
        assert_eq!(r.pop(), Some('a'));
        assert_eq!(r.pop(), Some('b'));
        assert_eq!(r.pop(), Some('c'));
        assert_eq!(r.pop(), None);
        assert_eq!(r.next_pos(), 3);
        assert_eq!(r.held(), 0);
    }

    #[test]
    fn refuses_duplicates_and_out_of_window() {
        let mut r = Reorder::new(2);
        r.push(0, 0).unwrap();
        assert_eq!(r.push(0, 0), Err(ReorderError::Duplicate(0)));
        assert_eq!(r.pop(), Some(0));
        assert_eq!(r.push(0, 0), Err(ReorderError::Duplicate(0)));
        assert_eq!(
            r.push(3, 0),
            Err(ReorderError::OutsideWindow {
                pos: 3,
                next: 1,
                capacity: 2
            })
        );
        r.push(2, 2).unwrap();
        r.grow_capacity(10);
        r.push(10, 10).unwrap();
    }

    #[test]
    fn skip_moves_past_a_position() {
        let mut r = Reorder::new(4);
        r.push(1, 'b').unwrap();
        r.skip();
        assert_eq!(r.pop(), Some('b'));
    }

    proptest! {
        #[test]
        fn any_permutation_comes_out_sorted(perm in Just((0u64..200).collect::<Vec<_>>()).prop_shuffle()) {
            let mut r = Reorder::new(200);
            let mut out = Vec::new();
            for p in perm {
                r.push(p, p).unwrap();
                while let Some(v) = r.pop() { out.push(v); }
            }
            prop_assert_eq!(out, (0u64..200).collect::<Vec<_>>());
            prop_assert_eq!(r.held(), 0);
        }
    }
}
