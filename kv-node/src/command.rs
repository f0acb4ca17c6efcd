//! Commands replicated through the Raft log and their results.
