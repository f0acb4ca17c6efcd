//! `kvctl watch`: follows `GET /watch` and prints events as they come;
//! when a stream ends (node killed, slow-consumer cut-off, network) it
//! resumes on the next endpoint from the revision after the last one it
//! printed, so no event is missed or printed twice.

use crate::Context;
use crate::cli::{Output, WatchArgs};
use crate::client::{Attempt, Client, Failure, ServerError, encode};
use serde_json::Value;
use std::io::Write;
use std::time::{Duration, Instant};

/// A stream silent this long is taken as dead (nodes send a progress line
/// every 5 s).
const STREAM_SILENCE: Duration = Duration::from_secs(15);
/// Give up when no endpoint accepted a watch for this long.
const GIVE_UP_AFTER: Duration = Duration::from_secs(60);

/// Where to resume: the revision to ask for, and how many events of that
/// revision were already printed (a stream may end inside a revision).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Position {
    from_revision: Option<u64>,
    /// Events of revision `from_revision` printed so far.
    printed_of_first: usize,
    /// Of those, how many the current stream has yet to replay (skipped).
    skip: usize,
}

impl Position {
    /// A new stream from `query()` replays the printed part of its first
    /// revision.
    fn start_stream(&mut self) {
        self.skip = self.printed_of_first;
    }

    /// An event line: true if it is new (not printed before).
    fn event(&mut self, revision: u64) -> bool {
        match self.from_revision {
            Some(from) if revision < from => false,
            Some(from) if revision == from && self.skip > 0 => {
                // Replayed events of a revision printed in part.
                self.skip -= 1;
                false
            }
            _ => true,
        }
    }

    /// After printing an event at `revision`.
    fn printed(&mut self, revision: u64) {
        if self.from_revision == Some(revision) {
            self.printed_of_first += 1;
        } else {
            self.from_revision = Some(revision);
            self.printed_of_first = 1;
        }
    }

    /// Nothing for this watch up to `revision` (a progress line, or the
    /// first line of a watch without a start revision).
    fn complete_up_to(&mut self, revision: u64) {
        let next = revision.saturating_add(1);
        if self.from_revision.is_none_or(|from| from < next) {
            // Events at `from` printed in part are now known complete.
            self.from_revision = Some(next);
            self.printed_of_first = 0;
            self.skip = 0;
        }
    }

    /// The `from_revision` to resume with, after a stream ended: the
    /// revision of the last event printed (its rest may be missing, the
    /// replayed part is skipped), or the next one if complete.
    fn query(&self) -> Option<u64> {
        self.from_revision
    }
}

/// How one stream ended.
enum StreamEnd {
    /// The node answered an error instead of a stream.
    Refused(ServerError),
    /// Connection failed or the stream broke: try elsewhere.
    Broken(String),
    /// The TLS handshake failed (the reason names what failed).
    Tls(String),
    /// `--max-events` reached.
    Done,
}

pub fn watch(ctx: &Context, timeout: Duration, args: &WatchArgs) -> Result<u8, Failure> {
    let silence = timeout.max(STREAM_SILENCE);
    let mut position = Position {
        from_revision: args.from_revision,
        ..Position::default()
    };
    let mut printed = 0u64;
    let endpoints = &ctx.client.endpoints;
    let mut last_success = Instant::now();
    let mut failures: Vec<(String, String)> = Vec::new();
    let mut compacted: Option<ServerError> = None;
    let mut compacted_count = 0usize;
    let mut tls_failed = 0usize;
    let mut round = 0u32;
    // Bounded: each pass either streams (resetting the clock) or fails,
    // and GIVE_UP_AFTER of failures ends the loop.
    for attempt in 0usize.. {
        let endpoint = &endpoints[attempt % endpoints.len()];
        if attempt > 0 && attempt % endpoints.len() == 0 {
            if last_success.elapsed() > GIVE_UP_AFTER {
                return Err(compacted
                    .map(Failure::Server)
                    .unwrap_or_else(|| Failure::Unreachable(std::mem::take(&mut failures))));
            }
            round += 1;
            std::thread::sleep(Duration::from_millis(100 * u64::from(round.min(20))));
            failures.clear();
            compacted = None;
            compacted_count = 0;
            tls_failed = 0;
        }
        match stream(
            &ctx.client,
            silence,
            endpoint,
            ctx.output,
            args,
            &mut position,
            &mut printed,
        ) {
            StreamEnd::Done => return Ok(0),
            StreamEnd::Refused(e) if e.status == 410 => {
                // Another node may keep more history; when none does, the
                // answer is definite.
                compacted_count += 1;
                if compacted_count == endpoints.len() {
                    return Err(Failure::Server(e));
                }
                compacted = Some(e);
            }
            StreamEnd::Tls(reason) => {
                // Every endpoint refusing the handshake is a setup error,
                // not an outage: say so now rather than retrying.
                failures.push((endpoint.clone(), reason));
                tls_failed += 1;
                if tls_failed == endpoints.len() {
                    return Err(Failure::Tls(failures));
                }
            }
            StreamEnd::Refused(e) if e.status == 503 => {
                failures.push((endpoint.clone(), format!("{}: {}", e.code, e.message)));
            }
            StreamEnd::Refused(error) if error.is_credentials() => {
                let token_given = ctx.client.has_token();
                return Err(Failure::Credentials { error, token_given });
            }
            StreamEnd::Refused(e) => return Err(Failure::Server(e)),
            StreamEnd::Broken(reason) => {
                if reason.starts_with("streamed") {
                    last_success = Instant::now();
                    round = 0;
                }
                eprintln!(
                    "kvctl watch: {endpoint}: {reason}; resuming from revision {}",
                    position
                        .query()
                        .map_or_else(|| "now".to_string(), |r| r.to_string())
                );
                failures.push((endpoint.clone(), reason));
            }
        }
    }
    unreachable!("the attempt loop only ends by returning")
}

/// One watch stream on one endpoint, until it ends.
fn stream(
    client: &Client,
    silence: Duration,
    endpoint: &str,
    output: Output,
    args: &WatchArgs,
    position: &mut Position,
    printed: &mut u64,
) -> StreamEnd {
    let mut path = if args.prefix {
        format!("/watch?prefix={}", encode(&args.key))
    } else {
        format!("/watch?key={}", encode(&args.key))
    };
    if let Some(from) = position.query() {
        path.push_str(&format!("&from_revision={from}"));
    }
    position.start_stream();
    let lines = match client.open_stream(endpoint, &path) {
        Ok(lines) => lines.with_silence_limit(silence),
        Err(Attempt::Refused(e)) => return StreamEnd::Refused(e),
        Err(Attempt::TlsFailed(reason)) => return StreamEnd::Tls(reason),
        Err(Attempt::NotSent(reason) | Attempt::MaybeSent(reason)) => {
            return StreamEnd::Broken(format!("cannot watch: {reason}"));
        }
        Err(Attempt::Answered(reply)) => {
            return StreamEnd::Broken(format!("unexpected answer {}", reply.status));
        }
    };
    let mut count = 0u64;
    for line in lines {
        let line = match line {
            Ok(line) => line,
            Err(e) => return StreamEnd::Broken(ended(count, &e.to_string())),
        };
        count += 1;
        let Ok(value) = serde_json::from_str::<Value>(&line) else {
            return StreamEnd::Broken(ended(count, "the node sent a line that is not JSON"));
        };
        if let Some(error) = value.get("error") {
            let code = error.get("code").and_then(Value::as_str).unwrap_or("error");
            let message = error.get("message").and_then(Value::as_str).unwrap_or("");
            return StreamEnd::Broken(ended(count, &format!("{code}: {message}")));
        }
        if value.get("watching").is_some() {
            if position.query().is_none()
                && let Some(revision) = value.get("revision").and_then(Value::as_u64)
            {
                position.complete_up_to(revision);
            }
            continue;
        }
        if let Some(progress) = value.get("progress").and_then(Value::as_u64) {
            position.complete_up_to(progress);
            continue;
        }
        let Some(revision) = value.get("revision").and_then(Value::as_u64) else {
            return StreamEnd::Broken(ended(count, "an event without a revision"));
        };
        if !position.event(revision) {
            continue;
        }
        print_event(output, &value);
        position.printed(revision);
        *printed += 1;
        if args.max_events.is_some_and(|max| *printed >= max) {
            return StreamEnd::Done;
        }
    }
    StreamEnd::Broken(ended(count, "the stream ended"))
}

/// Why a stream ended; "streamed" when it had delivered lines (the node
/// was up: the give-up clock restarts).
fn ended(lines: u64, reason: &str) -> String {
    if lines > 0 {
        format!("streamed {lines} lines, then {reason}")
    } else {
        reason.to_string()
    }
}

fn print_event(output: Output, event: &Value) {
    let mut stdout = std::io::stdout().lock();
    let text = match output {
        Output::Json => serde_json::to_string(event).unwrap_or_default(),
        Output::Table => {
            let revision = event.get("revision").and_then(Value::as_u64).unwrap_or(0);
            let kind = event.get("type").and_then(Value::as_str).unwrap_or("?");
            let key = event.get("key").and_then(Value::as_str).unwrap_or("");
            match event.get("value").and_then(Value::as_str) {
                Some(value) => format!("{revision} {kind} {key} {value}"),
                None => format!("{revision} {kind} {key}"),
            }
        }
    };
    // A closed stdout (`| head`) ends kvctl like any pipe would.
    if writeln!(stdout, "{text}")
        .and_then(|_| stdout.flush())
        .is_err()
    {
        std::process::exit(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_resumed_stream_skips_exactly_what_was_printed() {
        let mut p = Position::default();
        p.complete_up_to(9); // watching from revision 9
        assert_eq!(p.query(), Some(10));
        for revision in [10, 12, 12] {
            assert!(p.event(revision));
            p.printed(revision);
        }
        // The stream broke after two of revision 12's events: resume at 12
        // and skip those two when they come again.
        assert_eq!(p.query(), Some(12));
        p.start_stream();
        assert!(!p.event(12));
        assert!(!p.event(12));
        assert!(p.event(12));
        p.printed(12);
        // Broken again: now three were printed.
        p.start_stream();
        for _ in 0..3 {
            assert!(!p.event(12));
        }
        assert!(p.event(13));
        p.printed(13);
        // A progress line past the last event completes it.
        p.complete_up_to(20);
        assert_eq!(p.query(), Some(21));
        assert!(!p.event(20));
    }
}
