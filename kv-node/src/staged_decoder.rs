//! Decoding a snapshot from the leader while it arrives (issue 12: a
//! follower restores in the background, without stopping its ticks).
//!
//! The driver stages each chunk in the staging file and tells the decoder
//! how many bytes are there; a thread of the decoder's own reads the file
//! up to that length (waiting for more at its end) and builds the state
//! machine record by record. When raft-core says the snapshot is complete,
//! [`StagedDecoder::finish`] only waits for the last chunk's records: the
//! decoding of a 100 MB state overlaps its transfer instead of stopping the
//! driver after it. The file is the only copy of the bytes: nothing is held
//! twice in memory.
//!
//! A decoder dropped before `finish` (the transfer started over, or the
//! node stops) is abandoned: its thread sees that at its next read and
//! exits; its result is never looked at.

use kv_replica::state_machine::{KvStateMachine, SnapshotError};
use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

/// What the driver has told the reading thread.
#[derive(Debug, Default)]
struct Progress {
    /// Bytes staged (written and flushed) so far.
    staged: u64,
    /// No more bytes will come: the reader's end of file is `staged`.
    closed: bool,
    /// The result is not wanted any more: stop reading.
    abandoned: bool,
}

#[derive(Debug, Default)]
struct Shared {
    progress: Mutex<Progress>,
    more: Condvar,
}

impl Shared {
    fn update(&self, change: impl FnOnce(&mut Progress)) {
        change(&mut self.progress.lock().expect("decoder progress lock"));
        self.more.notify_all();
    }
}

/// The driver's end of one transfer's decoder.
#[derive(Debug)]
pub struct StagedDecoder {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<Result<KvStateMachine, SnapshotError>>>,
}

impl StagedDecoder {
    /// Starts decoding the staging file at `path` (just created, empty).
    pub fn start(path: &Path) -> io::Result<StagedDecoder> {
        let file = File::open(path)?;
        let shared = Arc::new(Shared::default());
        let reader = GrowingFile {
            file,
            position: 0,
            shared: shared.clone(),
        };
        let thread = std::thread::Builder::new()
            .name("snapshot-decode".into())
            .spawn(move || {
                crate::background::lower_this_threads_priority();
                let mut reader = io::BufReader::with_capacity(256 * 1024, reader);
                // A chain arrives as its whole snapshot, then its deltas.
                KvStateMachine::read_snapshot_stream(&mut reader).map(|(state, _)| state)
            })?;
        Ok(StagedDecoder {
            shared,
            thread: Some(thread),
        })
    }

    /// `staged` bytes are in the file now (flushed to it).
    pub fn staged(&self, staged: u64) {
        self.shared.update(|p| p.staged = staged);
    }

    /// The transfer is complete: waits for the rest to be decoded.
    pub fn finish(mut self) -> Result<KvStateMachine, SnapshotError> {
        self.shared.update(|p| p.closed = true);
        let thread = self.thread.take().expect("finished once");
        match thread.join() {
            Ok(result) => result,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    }
}

impl Drop for StagedDecoder {
    fn drop(&mut self) {
        if self.thread.is_some() {
            self.shared.update(|p| p.abandoned = true);
        }
    }
}

/// The staging file as a stream that ends where the driver says, waiting
/// at its current end for more.
struct GrowingFile {
    file: File,
    position: u64,
    shared: Arc<Shared>,
}

impl Read for GrowingFile {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let available = {
            let mut progress = self.shared.progress.lock().expect("decoder progress lock");
            loop {
                if progress.abandoned {
                    return Err(io::Error::other("snapshot transfer abandoned"));
                }
                if progress.staged > self.position || progress.closed {
                    break progress.staged.saturating_sub(self.position);
                }
                progress = self
                    .shared
                    .more
                    .wait(progress)
                    .expect("decoder progress lock");
            }
        };
        if available == 0 {
            return Ok(0);
        }
        let len = buf
            .len()
            .min(usize::try_from(available).unwrap_or(usize::MAX));
        let read = self.file.read_at(&mut buf[..len], self.position)?;
        if read == 0 {
            // The driver said these bytes were flushed to the file.
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the staging file is shorter than the bytes staged",
            ));
        }
        self.position += read as u64;
        Ok(read)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::io::Write;

    /// A state machine that applied `keys` puts of 64-byte values, one
    /// per entry (also for `wal_disk`'s tests).
    pub(crate) fn state_of(keys: u64) -> KvStateMachine {
        let mut state = KvStateMachine::new();
        for index in 1..=keys {
            state.apply_entry(&raft_core::Entry {
                term: raft_core::Term(1),
                index: raft_core::LogIndex(index),
                kind: raft_core::EntryKind::Normal,
                data: kv_replica::command::Command {
                    request: None,
                    client: None,
                    op: kv_replica::command::Op::Put {
                        key: format!("key{index}"),
                        value: "v".repeat(64),
                    },
                }
                .encode(),
            });
        }
        state
    }

    /// The decoder keeps up with the chunks as they are staged, and the
    /// state it returns is the one the bytes encode.
    #[test]
    fn decodes_chunks_as_they_are_staged() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("staging");
        let mut file = File::create(&path).unwrap();
        let state = state_of(2_000);
        let bytes = state.snapshot_bytes();
        let decoder = StagedDecoder::start(&path).unwrap();
        let mut staged = 0;
        for chunk in bytes.chunks(4_096) {
            file.write_all(chunk).unwrap();
            staged += chunk.len() as u64;
            decoder.staged(staged);
        }
        assert_eq!(decoder.finish().unwrap(), state);
    }

    /// A transfer cut short (closed before the snapshot's end) is refused
    /// as truncated, and bytes after the snapshot's end are refused too.
    #[test]
    fn a_short_or_long_transfer_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let bytes = state_of(100).snapshot_bytes();
        for staged in [
            &bytes[..bytes.len() - 10],
            &[&bytes[..], b"extra"].concat()[..],
        ] {
            let path = dir.path().join("staging");
            std::fs::write(&path, staged).unwrap();
            let decoder = StagedDecoder::start(&path).unwrap();
            decoder.staged(staged.len() as u64);
            assert!(decoder.finish().is_err(), "{} bytes", staged.len());
        }
    }

    /// An abandoned decoder's thread does not wait forever for bytes that
    /// will never come.
    #[test]
    fn an_abandoned_decoder_stops_its_thread() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("staging");
        std::fs::write(&path, &state_of(10).snapshot_bytes()[..20]).unwrap();
        let mut decoder = StagedDecoder::start(&path).unwrap();
        decoder.staged(20);
        let thread = decoder.thread.take().unwrap();
        decoder.shared.update(|p| p.abandoned = true);
        assert!(thread.join().unwrap().is_err());
    }
}
