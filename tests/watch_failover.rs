//! A watch across a leader kill (issue 14): real kv-node processes on
//! 127.0.0.11..13. The stream on the killed node ends; the watcher resumes
//! on another node with `from_revision` = last seen + 1 and sees every
//! acknowledged write exactly once, in revision order.
//!
//! The watch is read over a raw TCP connection (HTTP/1.1, chunked), so the
//! test sees exactly when a stream ends. Every wait is bounded.

mod common;

use common::cluster::{Cluster, READY_TIMEOUT};
use common::kv::{ClientSeq, put_ok};
use serde_json::Value;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

/// One watch stream: the lines of its chunked body.
struct Stream {
    reader: BufReader<TcpStream>,
    /// Body bytes received but not yet split into lines.
    pending: Vec<u8>,
}

enum Opened {
    Streaming(Stream),
    Refused(u16, String),
}

fn open(addr: SocketAddr, query: &str) -> std::io::Result<Opened> {
    let mut tcp = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    tcp.set_read_timeout(Some(Duration::from_secs(1)))?;
    write!(
        tcp,
        "GET /watch?{query} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut reader = BufReader::new(tcp);
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut head = Vec::new();
    // Headers end with an empty line.
    loop {
        let mut line = String::new();
        match reader.read_line(&mut line) {
            Ok(0) => return Err(std::io::ErrorKind::UnexpectedEof.into()),
            Ok(_) if line == "\r\n" => break,
            Ok(_) => head.push(line),
            Err(e) if Instant::now() < deadline && is_timeout(&e) => continue,
            Err(e) => return Err(e),
        }
    }
    let status: u16 = head[0].split_whitespace().nth(1).unwrap().parse().unwrap();
    if status != 200 {
        let mut body = String::new();
        let _ = reader.read_to_string(&mut body);
        return Ok(Opened::Refused(status, body));
    }
    assert!(
        head.iter().any(|h| h
            .to_ascii_lowercase()
            .starts_with("transfer-encoding: chunked")),
        "a watch streams chunked: {head:?}"
    );
    Ok(Opened::Streaming(Stream {
        reader,
        pending: Vec::new(),
    }))
}

fn is_timeout(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
    )
}

impl Stream {
    /// The next line; `Ok(None)` if nothing came within `within`; `Err`
    /// when the stream ended (cleanly or not).
    fn line(&mut self, within: Duration) -> Result<Option<Value>, String> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(end) = self.pending.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.pending.drain(..=end).collect();
                return Ok(Some(
                    serde_json::from_slice(&line).map_err(|e| e.to_string())?,
                ));
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
            // A chunk: its size in hex, CRLF, the data, CRLF.
            let mut size = String::new();
            match self.reader.read_line(&mut size) {
                Ok(0) => return Err("the stream ended".into()),
                Ok(_) => {}
                Err(e) if is_timeout(&e) => continue,
                Err(e) => return Err(format!("the stream broke: {e}")),
            }
            let size = usize::from_str_radix(size.trim(), 16)
                .map_err(|_| format!("bad chunk size {size:?}"))?;
            if size == 0 {
                return Err("the stream ended (last chunk)".into());
            }
            let mut data = vec![0; size + 2];
            let mut filled = 0;
            while filled < data.len() {
                match self.reader.read(&mut data[filled..]) {
                    Ok(0) => return Err("the stream ended mid-chunk".into()),
                    Ok(n) => filled += n,
                    Err(e) if is_timeout(&e) && Instant::now() < deadline => continue,
                    Err(e) => return Err(format!("the stream broke mid-chunk: {e}")),
                }
            }
            self.pending.extend_from_slice(&data[..size]);
        }
    }
}

#[test]
fn a_watch_resumes_on_another_node_after_the_leader_is_killed_and_misses_nothing() {
    let mut cluster = Cluster::start("watch-failover", 3);
    let leader = cluster.wait_ready(READY_TIMEOUT);
    let addrs = cluster.addrs();

    let Opened::Streaming(mut stream) = open(addrs[leader], "prefix=w/").unwrap() else {
        panic!("the leader refused the watch");
    };
    let first = stream.line(Duration::from_secs(10)).unwrap().unwrap();
    assert_eq!(first["watching"], true);
    let mut next_revision = first["revision"].as_u64().unwrap() + 1;

    // A writer puts w/0..w/59 (deduplicated, retried until definite across
    // the nodes) and reports each acknowledged revision.
    const WRITES: u64 = 60;
    let (acked_tx, acked_rx) = mpsc::channel::<(String, u64)>();
    let writer_addrs = addrs.clone();
    let writer = thread::spawn(move || {
        for n in 0..WRITES {
            let key = format!("w/{n}");
            let reply = put_ok(
                &writer_addrs,
                &key,
                &format!("v{n}"),
                &ClientSeq::new("watcher-test", n + 1),
            );
            let revision = reply["revision"]
                .as_u64()
                .expect("a put reply has a revision");
            acked_tx.send((key, revision)).unwrap();
            thread::sleep(Duration::from_millis(20));
        }
    });

    let mut seen: Vec<(u64, String)> = Vec::new();
    let mut acked: Vec<(String, u64)> = Vec::new();
    let mut killed = false;
    let mut stream_ended_on_killed = false;
    let mut current = leader;
    let deadline = Instant::now() + Duration::from_secs(180);
    while acked.len() < WRITES as usize || seen.len() < acked.len() {
        assert!(
            Instant::now() < deadline,
            "gave up: {} acked, {} seen\n{}",
            acked.len(),
            seen.len(),
            cluster.all_log_tails(20)
        );
        acked.extend(acked_rx.try_iter());
        if !killed && acked.len() >= 20 {
            cluster.kill(leader);
            killed = true;
        }
        match stream.line(Duration::from_millis(500)) {
            Ok(Some(line)) => {
                if let Some(revision) = line.get("revision").and_then(Value::as_u64)
                    && line.get("type").is_some()
                {
                    assert!(
                        revision >= next_revision,
                        "revision {revision} again or out of order"
                    );
                    seen.push((revision, line["key"].as_str().unwrap().to_string()));
                    next_revision = revision + 1;
                } else if let Some(progress) = line.get("progress").and_then(Value::as_u64) {
                    next_revision = next_revision.max(progress + 1);
                } else {
                    assert!(line.get("error").is_none(), "{line}");
                }
            }
            Ok(None) => {}
            Err(reason) => {
                assert!(killed, "the stream ended before any kill: {reason}");
                if current == leader {
                    stream_ended_on_killed = true;
                }
                // Resume on a live node, trying each in turn (bounded by
                // the deadline above).
                let resumed = loop {
                    assert!(Instant::now() < deadline, "no node took the watch back");
                    let mut found = None;
                    for i in cluster.live() {
                        let query = format!("prefix=w/&from_revision={next_revision}");
                        match open(addrs[i], &query) {
                            Ok(Opened::Streaming(s)) => {
                                found = Some((i, s));
                                break;
                            }
                            Ok(Opened::Refused(status, body)) => {
                                assert_ne!(status, 410, "history lost: {body}");
                            }
                            Err(_) => {}
                        }
                    }
                    match found {
                        Some(found) => break found,
                        None => thread::sleep(Duration::from_millis(200)),
                    }
                };
                current = resumed.0;
                stream = resumed.1;
                let first = stream.line(Duration::from_secs(10)).unwrap().unwrap();
                assert_eq!(first["watching"], true);
            }
        }
    }
    writer.join().unwrap();
    assert!(
        stream_ended_on_killed,
        "the stream on the killed leader never ended"
    );
    assert_ne!(current, leader);
    // Exactly the acknowledged writes, in revision order: no gap, no
    // duplicate, nothing else.
    let mut expected: Vec<(u64, String)> = acked.iter().map(|(k, r)| (*r, k.clone())).collect();
    expected.sort();
    assert_eq!(seen, expected);
    cluster.stop_all();
}
