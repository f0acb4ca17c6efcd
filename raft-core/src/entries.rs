//! The log's entries, held in fixed-size chunks so that no single append,
//! truncation or compaction touches more than one chunk's worth of them.
//!
//! A `VecDeque<Entry>` doubles when it fills: at a million entries that is
//! a 56 MB copy into freshly faulted pages, which held kv-node's driver
//! thread (the one that sends heartbeats) for 100-280 ms, on every node at
//! the same log length. Chunks are allocated once at full capacity and never
//! grow, so an append costs at most one chunk's allocation.
//!
//! Layout: every chunk holds at least one entry; every chunk but the first
//! and the last holds exactly [`CHUNK`]. The first may hold fewer (the front
//! of it was compacted away), the last may hold fewer (it is being filled).

use crate::types::Entry;
use std::collections::VecDeque;

/// Entries per chunk: about 230 KB of `Entry` headers (the data is shared).
const CHUNK: usize = 4096;

#[derive(Debug, Default)]
pub(crate) struct Entries {
    chunks: VecDeque<Vec<Entry>>,
    len: usize,
}

/// Entries removed from the front of the log by a compaction or a snapshot
/// install, in index order, handed to the driver to free where it likes
/// ([`crate::Node::take_compacted_entries`]).
#[derive(Debug, Default)]
pub struct RemovedEntries {
    chunks: Vec<Vec<Entry>>,
}

impl RemovedEntries {
    pub fn is_empty(&self) -> bool {
        self.chunks.is_empty()
    }

    pub fn len(&self) -> usize {
        self.chunks.iter().map(Vec::len).sum()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Entry> {
        self.chunks.iter().flatten()
    }
}

impl From<Vec<Entry>> for Entries {
    fn from(entries: Vec<Entry>) -> Entries {
        let mut out = Entries::default();
        for entry in entries {
            out.push_back(entry);
        }
        out
    }
}

impl Entries {
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn back(&self) -> Option<&Entry> {
        self.chunks.back().and_then(|c| c.last())
    }

    /// The chunk and the offset in it of entry `i` (`i < len`).
    fn locate(&self, i: usize) -> (usize, usize) {
        let first = self.chunks[0].len();
        if i < first {
            (0, i)
        } else {
            let j = i - first;
            (1 + j / CHUNK, j % CHUNK)
        }
    }

    pub fn get(&self, i: usize) -> Option<&Entry> {
        if i >= self.len {
            return None;
        }
        let (chunk, offset) = self.locate(i);
        Some(&self.chunks[chunk][offset])
    }

    pub fn push_back(&mut self, entry: Entry) {
        match self.chunks.back_mut() {
            Some(last) if last.len() < CHUNK => last.push(entry),
            _ => {
                let mut chunk = Vec::with_capacity(CHUNK);
                chunk.push(entry);
                self.chunks.push_back(chunk);
            }
        }
        self.len += 1;
    }

    /// Keeps the first `keep` entries.
    pub fn truncate(&mut self, keep: usize) {
        if keep >= self.len {
            return;
        }
        if keep == 0 {
            self.chunks.clear();
        } else {
            let (chunk, offset) = self.locate(keep - 1);
            self.chunks.truncate(chunk + 1);
            self.chunks[chunk].truncate(offset + 1);
        }
        self.len = keep;
    }

    /// Entries from the `start`-th on (none if `start >= len`).
    pub fn iter_from(&self, start: usize) -> impl DoubleEndedIterator<Item = &Entry> {
        let (chunk, offset) = if start < self.len {
            self.locate(start)
        } else {
            (self.chunks.len(), 0)
        };
        self.chunks
            .range(chunk..)
            .enumerate()
            .flat_map(move |(k, c)| c[if k == 0 { offset } else { 0 }..].iter())
    }

    /// Removes the first `count` entries. Whole chunks are moved, not
    /// copied; at most one chunk's entries are moved within it.
    pub fn remove_front(&mut self, count: usize) -> RemovedEntries {
        let count = count.min(self.len);
        let mut removed = RemovedEntries::default();
        let mut left = count;
        while left > 0 {
            let first = self.chunks.front_mut().expect("count <= len");
            if first.len() <= left {
                left -= first.len();
                removed.chunks.extend(self.chunks.pop_front());
            } else {
                removed.chunks.push(first.drain(..left).collect());
                left = 0;
            }
        }
        self.len -= count;
        removed
    }

    /// Removes every entry.
    pub fn take_all(&mut self) -> RemovedEntries {
        self.len = 0;
        RemovedEntries {
            chunks: std::mem::take(&mut self.chunks).into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{EntryKind, LogIndex, Term};
    use bytes::Bytes;

    fn entry(index: u64) -> Entry {
        Entry {
            index: LogIndex(index),
            term: Term(1),
            kind: EntryKind::Normal,
            data: Bytes::new(),
        }
    }

    fn indexes<'a>(it: impl Iterator<Item = &'a Entry>) -> Vec<u64> {
        it.map(|e| e.index.0).collect()
    }

    /// Every operation against a `VecDeque` doing the same, across chunk
    /// boundaries: appends, truncations and front removals of every size
    /// from a small set that straddles `CHUNK`.
    #[test]
    fn behaves_as_a_deque_across_chunk_boundaries() {
        let sizes = [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 2 * CHUNK + 7];
        for &first in &sizes {
            for &cut in &sizes {
                for &drop in &sizes {
                    let mut chunked = Entries::default();
                    let mut plain = VecDeque::new();
                    let mut next = 1;
                    let mut push = |n: usize, c: &mut Entries, p: &mut VecDeque<u64>| {
                        for _ in 0..n {
                            c.push_back(entry(next));
                            p.push_back(next);
                            next += 1;
                        }
                    };
                    push(first + 3 * CHUNK, &mut chunked, &mut plain);
                    let removed = chunked.remove_front(drop);
                    let expected: Vec<u64> = plain.drain(..drop.min(plain.len())).collect();
                    assert_eq!(indexes(removed.iter()), expected);
                    assert_eq!(removed.len(), expected.len());
                    chunked.truncate(chunked.len().saturating_sub(cut));
                    plain.truncate(plain.len().saturating_sub(cut));
                    push(first, &mut chunked, &mut plain);
                    assert_eq!(chunked.len(), plain.len());
                    assert_eq!(indexes(chunked.iter_from(0)), Vec::from(plain.clone()));
                    for probe in [0, 1, CHUNK - 1, CHUNK, plain.len().saturating_sub(1)] {
                        assert_eq!(
                            chunked.get(probe).map(|e| e.index.0),
                            plain.get(probe).copied()
                        );
                        assert_eq!(
                            indexes(chunked.iter_from(probe)),
                            plain.iter().skip(probe).copied().collect::<Vec<_>>()
                        );
                        assert_eq!(
                            indexes(chunked.iter_from(probe).rev()),
                            plain.iter().skip(probe).rev().copied().collect::<Vec<_>>()
                        );
                    }
                    assert_eq!(chunked.back().map(|e| e.index.0), plain.back().copied());
                    assert!(chunked.get(plain.len()).is_none());
                    assert!(chunked.chunks.iter().all(|c| !c.is_empty()));
                    let all = chunked.take_all();
                    assert_eq!(indexes(all.iter()), Vec::from(plain));
                    assert_eq!(chunked.len(), 0);
                    assert!(chunked.back().is_none());
                }
            }
        }
    }

    /// Appends never move the entries already held (no chunk is ever
    /// reallocated: each is allocated at full size), which is what keeps an
    /// append O(1) however long the log grows.
    #[test]
    fn appends_never_move_held_entries() {
        let mut entries = Entries::default();
        entries.push_back(entry(1));
        let first: *const Entry = entries.get(0).unwrap();
        for i in 2..=(3 * CHUNK as u64) {
            entries.push_back(entry(i));
        }
        assert_eq!(first, entries.get(0).unwrap() as *const Entry);
        entries.remove_front(10);
        for i in 0..10 {
            entries.push_back(entry(3 * CHUNK as u64 + 1 + i));
        }
        assert!(entries.chunks.iter().all(|c| c.capacity() == CHUNK));
    }
}
