//! Fuzzing the binary decoders of things that arrive from other nodes or
//! from the log:
//!
//! - the peer batch decoder (`inbound::decode_batch`, the body of
//!   `POST /raft/messages`: a postcard `PeerBatch` of `raft_core::Message`s);
//! - the replicated command decoder (`Command::decode`);
//! - raft-core's membership change decoder (`ConfChange::decode`).
//!
//! Inputs: random bytes, valid encodings of random values (which must round
//! trip), and those encodings cut at every offset, bit-flipped, spliced, and
//! with their length and count fields inflated. No panic, no hang, no
//! allocation that a length inside the input could inflate. Run longer with
//! `FUZZ_CASES=N` (FUZZING.md).

mod fuzz_harness;

use bytes::Bytes;
use fuzz_harness::{assert_bounded, fuzz, hex, within};
use kv_node::ids::{Member, Members, node_id_of};
use kv_node::peer::inbound::{BatchError, decode_batch};
use kv_node::peer::transport::PeerBatch;
use kv_replica::command::{ClientSeq, Command, Op, RequestId};
use proptest::prelude::*;
use raft_core::{
    ConfChange, ConfChangeStep, Entry, EntryKind, ForwardedEntry, LogIndex, Membership, Message,
    MessageBody, NodeId, SnapshotMeta, Term,
};
use std::time::Duration;

const DEADLINE: Duration = Duration::from_secs(10);

/// Damage applied to a valid encoding.
#[derive(Clone, Debug)]
enum Mutation {
    Flip {
        at: usize,
        mask: u8,
    },
    Cut {
        at: usize,
    },
    Splice {
        at: usize,
        bytes: Vec<u8>,
    },
    /// A varint of 2^32..2^64 (a length or count claiming gigabytes or
    /// more) inserted at `at`, replacing `drop` bytes.
    HugeVarint {
        at: usize,
        drop: usize,
        value: u64,
    },
    Append {
        bytes: Vec<u8>,
    },
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        4 => (any::<usize>(), 1u8..=255).prop_map(|(at, mask)| Mutation::Flip { at, mask }),
        2 => any::<usize>().prop_map(|at| Mutation::Cut { at }),
        2 => (any::<usize>(), prop::collection::vec(any::<u8>(), 1..10))
            .prop_map(|(at, bytes)| Mutation::Splice { at, bytes }),
        3 => (any::<usize>(), 0usize..3, prop_oneof![Just(u64::MAX), Just(1u64 << 32), (1u64 << 32)..u64::MAX])
            .prop_map(|(at, drop, value)| Mutation::HugeVarint { at, drop, value }),
        1 => prop::collection::vec(any::<u8>(), 1..10).prop_map(|bytes| Mutation::Append { bytes }),
    ]
}

fn varint(mut value: u64) -> Vec<u8> {
    let mut out = Vec::new();
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
    out
}

fn mutate(bytes: &mut Vec<u8>, mutation: &Mutation) {
    let len = bytes.len().max(1);
    match mutation {
        Mutation::Flip { at, mask } => {
            if !bytes.is_empty() {
                bytes[at % len] ^= mask;
            }
        }
        Mutation::Cut { at } => bytes.truncate(at % len),
        Mutation::Splice { at, bytes: new } => {
            for (i, b) in new.iter().enumerate() {
                if let Some(slot) = bytes.get_mut(at % len + i) {
                    *slot = *b;
                }
            }
        }
        Mutation::HugeVarint { at, drop, value } => {
            let at = at % (bytes.len() + 1);
            let end = (at + drop).min(bytes.len());
            bytes.splice(at..end, varint(*value));
        }
        Mutation::Append { bytes: new } => bytes.extend_from_slice(new),
    }
}

/// Runs `decode` on `bytes` under the deadline and allocation budget.
fn decode_bounded<T: Send + 'static>(
    name: &str,
    bytes: &[u8],
    decode: impl FnOnce(&[u8]) -> T + Send + 'static,
) -> T {
    let what = format!("{name}({})", hex(bytes));
    let owned = bytes.to_vec();
    let (value, cost) = within(DEADLINE, &what, move || decode(&owned));
    assert_bounded(&cost, bytes.len(), &what);
    value
}

// ---------------------------------------------------------------------------
// Peer batches
// ---------------------------------------------------------------------------

fn members() -> Members {
    let member = |name: &str| Member {
        name: name.into(),
        id: node_id_of(name),
        url: format!("http://{name}.invalid:1"),
    };
    Members::new(member("n1"), vec![member("n2"), member("n3")]).unwrap()
}

fn data() -> impl Strategy<Value = Bytes> {
    prop::collection::vec(any::<u8>(), 0..24).prop_map(Bytes::from)
}

fn index() -> impl Strategy<Value = LogIndex> {
    prop_oneof![0u64..10, any::<u64>()].prop_map(LogIndex)
}

fn term() -> impl Strategy<Value = Term> {
    prop_oneof![0u64..5, any::<u64>()].prop_map(Term)
}

fn entry_kind() -> impl Strategy<Value = EntryKind> {
    prop_oneof![
        Just(EntryKind::Normal),
        Just(EntryKind::Noop),
        Just(EntryKind::ConfChange)
    ]
}

fn body() -> impl Strategy<Value = MessageBody> {
    let ids = prop::collection::vec(any::<u64>().prop_map(NodeId), 1..4);
    prop_oneof![
        (any::<bool>(), index(), term(), any::<bool>()).prop_map(
            |(pre_vote, last_log_index, last_log_term, transfer)| MessageBody::RequestVote {
                pre_vote,
                last_log_index,
                last_log_term,
                transfer,
            }
        ),
        (any::<bool>(), any::<bool>())
            .prop_map(|(pre_vote, granted)| MessageBody::RequestVoteResponse { pre_vote, granted }),
        (
            index(),
            term(),
            prop::collection::vec((term(), index(), entry_kind(), data()), 0..4),
            index()
        )
            .prop_map(|(prev_log_index, prev_log_term, entries, leader_commit)| {
                MessageBody::AppendEntries {
                    prev_log_index,
                    prev_log_term,
                    entries: entries
                        .into_iter()
                        .map(|(term, index, kind, data)| Entry {
                            term,
                            index,
                            kind,
                            data,
                        })
                        .collect(),
                    leader_commit,
                }
            }),
        (
            any::<bool>(),
            index(),
            index(),
            prop::option::of(term()),
            index()
        )
            .prop_map(
                |(success, match_index, conflict_index, conflict_term, reject_index)| {
                    MessageBody::AppendEntriesResponse {
                        success,
                        match_index,
                        conflict_index,
                        conflict_term,
                        reject_index,
                    }
                }
            ),
        (index(), any::<u64>())
            .prop_map(|(commit, read_round)| MessageBody::Heartbeat { commit, read_round }),
        any::<u64>().prop_map(|read_round| MessageBody::HeartbeatResponse { read_round }),
        (
            index(),
            term(),
            ids,
            any::<u64>(),
            any::<u64>(),
            any::<u64>(),
            data()
        )
            .prop_map(|(index, term, voters, offset, len, total_bytes, data)| {
                MessageBody::InstallSnapshot {
                    meta: SnapshotMeta {
                        index,
                        term,
                        membership: Membership::new(voters),
                    },
                    offset,
                    len,
                    total_bytes,
                    data,
                }
            }),
        (index(), any::<u64>(), prop::option::of(index())).prop_map(
            |(snapshot_index, received, last_index)| MessageBody::InstallSnapshotResponse {
                snapshot_index,
                received,
                last_index,
            }
        ),
        Just(MessageBody::TimeoutNow),
        prop::collection::vec((entry_kind(), data()), 0..3).prop_map(|entries| {
            MessageBody::Propose {
                entries: entries
                    .into_iter()
                    .map(|(kind, data)| ForwardedEntry { kind, data })
                    .collect(),
            }
        }),
        (any::<u64>(), any::<bool>())
            .prop_map(|(context, lease)| MessageBody::ReadIndex { context, lease }),
        (any::<u64>(), prop::option::of(index()))
            .prop_map(|(context, index)| MessageBody::ReadIndexResponse { context, index }),
    ]
}

/// A batch from n2 to n1 (or, sometimes, from or to someone else).
fn batch() -> impl Strategy<Value = PeerBatch> {
    let name = prop_oneof![8 => Just("n2"), 1 => Just("n3"), 1 => Just("n9")];
    (
        name.clone(),
        prop_oneof![9 => Just("n1"), 1 => Just("n2")],
        any::<u64>(),
        any::<u64>(),
        prop::collection::vec((term(), body()), 0..5),
    )
        .prop_map(|(from, to, epoch, seq, messages)| PeerBatch {
            from: node_id_of(from),
            epoch,
            seq,
            timing: Default::default(),
            messages: messages
                .into_iter()
                .map(|(term, body)| Message {
                    from: node_id_of(from),
                    to: node_id_of(to),
                    term,
                    body,
                })
                .collect(),
        })
}

/// `decode_batch` as owned values: the batch's parts, or the error.
type Decoded = Result<(NodeId, u64, u64, Vec<Message>), BatchError>;

fn decode(bytes: &[u8]) -> Decoded {
    decode_batch(bytes, &members()).map(|b| (b.from, b.epoch, b.seq, b.messages))
}

/// What decoded is a batch from a known peer, addressed to this node, that
/// encodes and decodes to itself.
fn assert_sound(decoded: &Decoded) {
    if let Ok((from, epoch, seq, messages)) = decoded {
        let members = members();
        assert!(members.peers.contains_key(from));
        for m in messages {
            assert_eq!(m.from, *from);
            assert_eq!(m.to, members.this.id);
        }
        let again = postcard::to_allocvec(&PeerBatch {
            from: *from,
            epoch: *epoch,
            seq: *seq,
            timing: Default::default(),
            messages: messages.clone(),
        })
        .unwrap();
        assert_eq!(&decode(&again).unwrap().3, messages);
    }
}

#[test]
fn fuzz_peer_batches_valid_and_mutated() {
    fuzz(
        "peer_batch_mutations",
        3000,
        (batch(), prop::collection::vec(mutation(), 0..4)),
        |(batch, mutations)| {
            let valid = postcard::to_allocvec(&batch).unwrap();
            let mut bytes = valid.clone();
            for m in &mutations {
                mutate(&mut bytes, m);
            }
            let decoded = decode_bounded("decode_batch", &bytes, decode);
            if bytes == valid {
                // A valid batch decodes unless its sender or recipient is wrong.
                let known = members().peers.contains_key(&batch.from)
                    && batch.messages.iter().all(|m| m.to == members().this.id);
                assert_eq!(decoded.is_ok(), known, "{decoded:?}");
                if let Ok((_, _, _, messages)) = &decoded {
                    assert_eq!(messages, &batch.messages);
                }
            }
            assert_sound(&decoded);
        },
    );
}

#[test]
fn fuzz_peer_batches_every_truncation_is_refused() {
    fuzz("peer_batch_truncations", 200, batch(), |batch| {
        let valid = postcard::to_allocvec(&batch).unwrap();
        for cut in 0..valid.len() {
            assert!(
                decode(&valid[..cut]).is_err(),
                "cut at {cut} of {}",
                valid.len()
            );
        }
    });
}

#[test]
fn fuzz_peer_batches_random_bytes() {
    fuzz(
        "peer_batch_random_bytes",
        5000,
        prop_oneof![
            prop::collection::vec(any::<u8>(), 0..96),
            // A known sender first, so the message list gets parsed.
            prop::collection::vec(any::<u8>(), 0..96).prop_map(|tail| {
                let mut bytes = varint(node_id_of("n2").0);
                bytes.extend(tail);
                bytes
            }),
        ],
        |bytes| {
            let decoded = decode_bounded("decode_batch", &bytes, decode);
            assert_sound(&decoded);
        },
    );
}

/// About 32 bytes claiming 2^64 - 1 messages, or one message whose entry data is
/// 4 GiB long: refused at once, without allocating for the claim.
#[test]
fn a_peer_batch_claiming_huge_counts_is_refused_quickly() {
    let n2 = node_id_of("n2").0;
    let mut many_messages = varint(n2);
    many_messages.extend(varint(1)); // epoch
    many_messages.extend(varint(1)); // seq
    many_messages.extend([10, 15, 3, 1]); // timing: tick, election ticks, drift, check-quorum
    many_messages.extend(varint(u64::MAX)); // message count
    many_messages.resize(36, 0);

    let mut huge_data = varint(n2);
    huge_data.extend([1, 1]); // epoch, seq
    huge_data.extend([10, 15, 3, 1]); // timing
    huge_data.push(1); // one message
    huge_data.extend(varint(n2));
    huge_data.extend(varint(node_id_of("n1").0));
    huge_data.extend([1, 2]); // term 1, AppendEntries
    huge_data.extend([0, 0, 1]); // prev index, prev term, one entry
    huge_data.extend([1, 1, 0]); // term, index, Normal
    huge_data.extend(varint(4 << 30)); // data: 4 GiB
    huge_data.resize(52, 7);

    for bytes in [many_messages, huge_data] {
        let what = format!("decode_batch({})", hex(&bytes));
        let input = bytes.clone();
        let (decoded, cost) = within(DEADLINE, &what, move || decode(&input).is_err());
        assert!(decoded, "{what}");
        assert!(
            cost.elapsed < Duration::from_secs(1) && cost.largest_alloc <= 1 << 20,
            "{what}: {cost:?}"
        );
    }
}

// ---------------------------------------------------------------------------
// Commands
// ---------------------------------------------------------------------------

fn text() -> impl Strategy<Value = String> {
    prop_oneof![Just(String::new()), "[a-z]{1,6}", ".{0,12}"]
}

fn command() -> impl Strategy<Value = Command> {
    let op = prop_oneof![
        (text(), text()).prop_map(|(key, value)| Op::Put { key, value }),
        text().prop_map(|key| Op::Delete { key }),
        (text(), prop::option::of(text()), prop::option::of(text())).prop_map(
            |(key, expected, value)| Op::Cas {
                key,
                expected,
                value
            }
        ),
        prop::collection::vec((text(), text()), 0..4).prop_map(|entries| Op::MultiPut { entries }),
    ];
    (
        prop::option::of((any::<u64>(), any::<u64>())),
        prop::option::of((text(), any::<u64>())),
        op,
    )
        .prop_map(|(request, client, op)| Command {
            request: request.map(|(node, id)| RequestId { node, id }),
            client: client.map(|(client_id, seq)| ClientSeq { client_id, seq }),
            op,
        })
}

fn decode_command(bytes: &[u8]) -> Option<Command> {
    Command::decode(bytes).ok()
}

#[test]
fn fuzz_commands_valid_and_mutated() {
    fuzz(
        "command_mutations",
        5000,
        (command(), prop::collection::vec(mutation(), 0..4)),
        |(command, mutations)| {
            let valid = command.encode().to_vec();
            let mut bytes = valid.clone();
            for m in &mutations {
                mutate(&mut bytes, m);
            }
            let decoded = decode_bounded("Command::decode", &bytes, decode_command);
            if bytes == valid {
                assert_eq!(decoded.as_ref(), Some(&command));
            }
            if let Some(decoded) = decoded {
                assert_eq!(Command::decode(&decoded.encode()).unwrap(), decoded);
            }
        },
    );
}

#[test]
fn fuzz_commands_random_bytes_and_truncations() {
    fuzz(
        "command_random_bytes",
        5000,
        (prop::collection::vec(any::<u8>(), 0..64), command()),
        |(bytes, command)| {
            if let Some(decoded) = decode_bounded("Command::decode", &bytes, decode_command) {
                assert_eq!(Command::decode(&decoded.encode()).unwrap(), decoded);
            }
            let valid = command.encode();
            for cut in 0..valid.len() {
                assert!(Command::decode(&valid[..cut]).is_err(), "cut at {cut}");
            }
        },
    );
}

// ---------------------------------------------------------------------------
// Membership changes
// ---------------------------------------------------------------------------

fn conf_change() -> impl Strategy<Value = ConfChange> {
    let id = prop_oneof![1u64..5, any::<u64>()].prop_map(NodeId);
    let step = prop_oneof![
        id.clone().prop_map(ConfChangeStep::AddVoter),
        id.clone().prop_map(ConfChangeStep::AddLearner),
        id.clone().prop_map(ConfChangeStep::Remove),
    ];
    prop_oneof![
        Just(ConfChange::Leave),
        prop::collection::vec(step, 0..5).prop_map(ConfChange::Enter),
        prop::collection::vec(id, 0..5).prop_map(ConfChange::Bootstrap),
    ]
}

/// `ConfChange::decode` has one encoding per value: whatever decodes
/// encodes back to the same bytes.
fn decode_conf_change(bytes: &[u8]) -> Option<ConfChange> {
    let decoded = ConfChange::decode(bytes).ok()?;
    assert_eq!(
        decoded.encode().as_ref(),
        bytes,
        "{decoded:?} is not canonical"
    );
    Some(decoded)
}

#[test]
fn fuzz_conf_changes_valid_mutated_and_random() {
    fuzz(
        "conf_change_mutations",
        5000,
        (
            conf_change(),
            prop::collection::vec(mutation(), 0..3),
            prop::collection::vec(any::<u8>(), 0..40),
        ),
        |(change, mutations, random)| {
            let valid = change.encode().to_vec();
            let mut bytes = valid.clone();
            for m in &mutations {
                mutate(&mut bytes, m);
            }
            let decoded = decode_bounded("ConfChange::decode", &bytes, decode_conf_change);
            if bytes == valid {
                assert_eq!(decoded, Some(change.clone()));
            }
            decode_bounded("ConfChange::decode", &random, decode_conf_change);
            for cut in 0..valid.len() {
                assert!(ConfChange::decode(&valid[..cut]).is_err(), "cut at {cut}");
            }
        },
    );
}

/// Five bytes claiming u32::MAX steps or voters: refused at once.
#[test]
fn a_conf_change_claiming_u32_max_steps_is_refused_quickly() {
    for kind in [1u8, 2] {
        let mut bytes = vec![kind];
        bytes.extend_from_slice(&u32::MAX.to_le_bytes());
        bytes.resize(32, 0);
        let (refused, cost) = within(DEADLINE, "u32::MAX steps", move || {
            ConfChange::decode(&bytes).is_err()
        });
        assert!(refused);
        assert!(cost.largest_alloc < 1024, "{cost:?}");
    }
}
