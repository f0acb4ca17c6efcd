//! The one Ready loop: [`Node::handle_ready`] walks a [`Ready`] through the
//! steps of its contract, in order, calling a driver's [`ReadyHandler`] for
//! each, and acknowledges what the contract says to acknowledge.
//!
//! Drivers (kv-replica's replica, which kv-node and the simulator run; the
//! test harness; the examples) implement only the steps: where a message
//! goes, how a write is stored and made durable, how an entry is applied.
//! The order and the `Persisted` and `Applied` acknowledgements are written
//! once, here.

use crate::input::Input;
use crate::message::{Message, MessageBody};
use crate::node::Node;
use crate::ready::{ReadState, Ready, SnapshotChunk};
use crate::types::{Entry, HardState, SnapshotMeta, SoftState};
use bytes::Bytes;

/// Whether a round's writes are durable when [`ReadyHandler::persist`]
/// returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Durability {
    /// Durable now: the loop steps [`Input::Persisted`] at once.
    Now,
    /// A persist stage makes them durable later and then steps
    /// `Input::Persisted { ready }` itself, in the order of the rounds.
    Later,
}

/// The steps of the [`Ready`] contract a driver performs. Every step but
/// `send` and `persist` has a default that does nothing, for drivers (like
/// the examples) that keep nothing.
/// The part of a stored snapshot one `InstallSnapshot` message carries:
/// bytes `offset..offset + len` of the snapshot at `meta`.
#[derive(Clone, Copy, Debug)]
pub struct ChunkRequest<'a> {
    pub meta: &'a SnapshotMeta,
    pub offset: u64,
    pub len: u64,
}

pub trait ReadyHandler {
    type Error;

    /// Step 1: a role, term or leader change, for routing requests.
    fn soft_state(&mut self, _soft: &SoftState) {}

    /// Step 3: hand a message to the network. It may leave before this
    /// round's writes are durable: the core held back every message that
    /// depends on them. An `InstallSnapshot` arrives with its chunk filled
    /// in by [`ReadyHandler::snapshot_chunk`].
    fn send(&mut self, message: Message) -> Result<(), Self::Error>;

    /// Bytes `offset..offset + len` of the stored snapshot at `meta` (fewer
    /// at its end; see [`ChunkRequest`]), for one `InstallSnapshot` chunk. The core names the
    /// snapshot it was last told of (taken, installed or recovered), which
    /// must be the one stored: an implementation refuses any other.
    fn snapshot_chunk(&mut self, chunk: ChunkRequest) -> Result<Bytes, Self::Error>;

    /// Step 2a: stage part of a snapshot arriving from the leader; a chunk
    /// at offset 0 starts a new one.
    fn stage_snapshot_chunk(&mut self, _chunk: SnapshotChunk) -> Result<(), Self::Error> {
        Ok(())
    }

    /// Step 2b: the staged snapshot is complete: validate it, install it in
    /// place of the whole log, and restore the state machine from it.
    fn install_snapshot(&mut self, _meta: &SnapshotMeta) -> Result<(), Self::Error> {
        Ok(())
    }

    /// Step 2c: truncate the log from the first entry's index (a follower
    /// may overwrite a conflicting suffix) and append. Never empty.
    fn append(&mut self, _entries: &[Entry]) -> Result<(), Self::Error> {
        Ok(())
    }

    /// Step 2d: write the hard state.
    fn set_hard_state(&mut self, _hard_state: &HardState) -> Result<(), Self::Error> {
        Ok(())
    }

    /// Step 2e: make this round's writes durable. `must_sync` is false when
    /// the only change is the commit index ([`Ready::must_sync`]): a crash
    /// may lose it, and the leader tells it again.
    fn persist(&mut self, ready: u64, must_sync: bool) -> Result<Durability, Self::Error>;

    /// Step 4: apply committed entries to the state machine, in order.
    fn apply(&mut self, _entries: Vec<Entry>) -> Result<(), Self::Error> {
        Ok(())
    }

    /// Step 5: serve each read once applied up to its index; fail the
    /// dropped ones (safe to retry).
    fn reads(&mut self, _read_states: Vec<ReadState>, _dropped_reads: Vec<u64>) {}
}

impl Node {
    /// Drains one [`Ready`] through `handler`, in the contract's order.
    /// Returns false if there was nothing to do. An error from the handler
    /// stops the round where it happened: the driver must stop the node
    /// (its storage or state machine can no longer be trusted).
    pub fn handle_ready<H: ReadyHandler>(&mut self, handler: &mut H) -> Result<bool, H::Error> {
        if !self.has_ready() {
            return Ok(false);
        }
        let Ready {
            number,
            soft_state,
            snapshot_chunks,
            snapshot,
            hard_state,
            entries,
            messages,
            committed_entries,
            read_states,
            dropped_reads,
            must_sync,
        } = self.ready();
        let must_persist = snapshot.is_some()
            || !snapshot_chunks.is_empty()
            || hard_state.is_some()
            || !entries.is_empty();
        if let Some(soft) = &soft_state {
            handler.soft_state(soft);
        }
        // Messages first: they may leave in parallel with the writes below.
        for mut message in messages {
            if let MessageBody::InstallSnapshot {
                meta,
                offset,
                len,
                data,
                ..
            } = &mut message.body
                && data.is_empty()
            {
                *data = handler.snapshot_chunk(ChunkRequest {
                    meta,
                    offset: *offset,
                    len: *len,
                })?;
            }
            handler.send(message)?;
        }
        for chunk in snapshot_chunks {
            handler.stage_snapshot_chunk(chunk)?;
        }
        if let Some(meta) = &snapshot {
            handler.install_snapshot(meta)?;
        }
        if !entries.is_empty() {
            handler.append(&entries)?;
        }
        if let Some(hard_state) = &hard_state {
            handler.set_hard_state(hard_state)?;
        }
        if must_persist && handler.persist(number, must_sync)? == Durability::Now {
            self.step(Input::Persisted { ready: number })
                .expect("acknowledging the ready just handed out never fails");
        }
        if let Some(last) = committed_entries.last().map(|e| e.index) {
            handler.apply(committed_entries)?;
            self.step(Input::Applied { index: last })
                .expect("the applied index was just handed out");
        }
        handler.reads(read_states, dropped_reads);
        Ok(true)
    }
}
