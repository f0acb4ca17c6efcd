//! Durable storage: write-ahead log, hard state, snapshots.
