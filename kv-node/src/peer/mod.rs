//! Everything that talks to other nodes: the one HTTP(S) client a node
//! uses for its peers (`client`), raft messages out (`transport`) and in
//! (`inbound`), over one ordered stream per peer (`stream`), joining a cluster (`join`), and the leader-only cluster
//! operations a follower forwards to the leader (`forward`). Transport,
//! join and forward share one [`PeerClient`], so TLS and connection reuse
//! are the same for all three.
//!
//! Depends on the driver (to hand in what arrives) and on `settings`; the
//! HTTP layer depends on it, never the other way round.

pub mod client;
pub mod forward;
pub mod inbound;
pub mod join;
pub mod rewind;
pub mod stream;
pub mod transport;

pub use client::{ClientOptions, PeerClient, PeerClientError};
