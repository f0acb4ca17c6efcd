//! Porcupine's doubly linked list of call and return events, in time order,
//! with O(1) unlinking of an operation's two events and LIFO relinking.

use super::model::KeyOp;

/// No entry: the end of the list, or no operation.
pub(super) const NIL: u32 = u32::MAX;
/// The sentinel entry before the first event.
const HEAD: u32 = 0;

#[derive(Clone, Copy)]
pub(super) struct Event {
    prev: u32,
    pub next: u32,
    pub op: u32,
    pub is_call: bool,
}

/// The call and return events, in time order, after a head sentinel.
pub(super) struct EventList {
    pub entries: Vec<Event>,
    pub call_of: Vec<u32>,
    return_of: Vec<u32>,
}

impl EventList {
    pub fn new(ops: &[KeyOp]) -> Self {
        // Calls before returns at equal times (overlapping is the permissive
        // reading of a tie), and unknown-outcome returns after every required
        // one, so that the search never meets them while required ops remain.
        let mut order: Vec<(u64, u8, u32)> = Vec::with_capacity(2 * ops.len());
        for (index, op) in ops.iter().enumerate() {
            let index = u32::try_from(index).expect("fewer than 2^32 ops per key");
            order.push((op.invoke, 0, index));
            order.push((op.complete, if op.optional { 2 } else { 1 }, index));
        }
        order.sort_unstable();
        let mut entries = Vec::with_capacity(order.len() + 1);
        entries.push(Event {
            prev: NIL,
            next: if order.is_empty() { NIL } else { 1 },
            op: NIL,
            is_call: false,
        });
        let mut call_of = vec![NIL; ops.len()];
        let mut return_of = vec![NIL; ops.len()];
        for (position, &(_, rank, op)) in order.iter().enumerate() {
            let id = position as u32 + 1;
            let is_call = rank == 0;
            if is_call {
                call_of[op as usize] = id;
            } else {
                return_of[op as usize] = id;
            }
            let next = if position + 1 == order.len() {
                NIL
            } else {
                id + 1
            };
            entries.push(Event {
                prev: id - 1,
                next,
                op,
                is_call,
            });
        }
        EventList {
            entries,
            call_of,
            return_of,
        }
    }

    pub fn first(&self) -> u32 {
        self.entries[HEAD as usize].next
    }

    /// Unlinks the call and return events of `op`.
    pub fn lift(&mut self, op: u32) {
        self.unlink(self.call_of[op as usize]);
        self.unlink(self.return_of[op as usize]);
    }

    /// Relinks what the matching `lift` unlinked; must be undone in LIFO order.
    pub fn unlift(&mut self, op: u32) {
        self.relink(self.return_of[op as usize]);
        self.relink(self.call_of[op as usize]);
    }

    fn unlink(&mut self, id: u32) {
        let Event { prev, next, .. } = self.entries[id as usize];
        self.entries[prev as usize].next = next;
        if next != NIL {
            self.entries[next as usize].prev = prev;
        }
    }

    fn relink(&mut self, id: u32) {
        let Event { prev, next, .. } = self.entries[id as usize];
        self.entries[prev as usize].next = id;
        if next != NIL {
            self.entries[next as usize].prev = id;
        }
    }
}
