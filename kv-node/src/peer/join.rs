//! `--join URL`: a new node asks a running cluster to add it.
//!
//! 1. Before the node starts, [`discover`] reads `GET /cluster/members`
//!    from the URL, so that the node can answer the leader from its first
//!    message on (the address book in the log arrives only with the log).
//! 2. Once serving, [`run`] sends `POST /cluster/members {"id", "url",
//!    "voter": false}` there (a follower forwards it to the leader) until
//!    it is accepted, unless this node is a member already (a restart).
//! 3. With `--auto-promote`, it waits until it is a learner that has
//!    applied everything it knows is committed, then asks to become a
//!    voter the same way (`"voter": true`); the leader also checks that it
//!    caught up before promoting.

use super::client::PeerClient;
use crate::driver::DriverHandle;
use crate::ids::{Member, Members, node_id_of};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// How long discovery keeps trying before the node gives up starting.
const DISCOVER_FOR: Duration = Duration::from_secs(30);
const RETRY_EVERY: Duration = Duration::from_millis(300);
/// One membership request may wait for a learner to catch up (10 s) and
/// two proposals to apply.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(35);

/// Why the cluster to join could not be read.
#[derive(Debug, thiserror::Error)]
#[error("cannot read the members of {url} within {secs} s: {last}")]
pub struct JoinError {
    pub url: String,
    pub secs: u64,
    pub last: String,
}

/// Checks that `via` uses the scheme of this node's peer traffic.
fn check_scheme(client: &PeerClient, via: &str) -> Result<(), String> {
    let scheme = client.scheme();
    if via.starts_with(&format!("{scheme}://")) {
        Ok(())
    } else {
        Err(format!(
            "--join {via:?}: this node talks to its peers over {scheme}, so the URL must start with {scheme}://"
        ))
    }
}

/// The members the cluster at `via` lists, as `(name, url, voter)`.
async fn members_of(client: &PeerClient, via: &str) -> Result<Vec<(String, String, bool)>, String> {
    let url = format!("{via}/cluster/members");
    let (status, body) = client
        .request(
            Method::GET,
            &url,
            None,
            "application/json",
            Vec::new(),
            REQUEST_TIMEOUT,
        )
        .await
        .map_err(|e| e.to_string())?;
    if !status.is_success() {
        return Err(format!("GET /cluster/members answered {status}"));
    }
    let body: Value = serde_json::from_slice(&body).map_err(|e| e.to_string())?;
    let list = body["members"].as_array().cloned().unwrap_or_default();
    Ok(list
        .iter()
        .filter_map(|m| {
            let name = m["id"].as_str()?.to_string();
            let url = m["url"].as_str()?.to_string();
            Some((name, url, m["voter"].as_bool().unwrap_or(false)))
        })
        .collect())
}

/// Step 1: `members` plus every member the cluster at `via` lists.
pub async fn discover(
    client: &PeerClient,
    via: &str,
    members: &Members,
) -> Result<Members, JoinError> {
    check_scheme(client, via).map_err(|last| JoinError {
        url: via.to_string(),
        secs: 0,
        last,
    })?;
    let started = Instant::now();
    loop {
        match members_of(client, via).await {
            Ok(list) => {
                let peers = members
                    .peers
                    .values()
                    .cloned()
                    .chain(list.into_iter().map(|(name, url, _)| Member {
                        id: node_id_of(&name),
                        name,
                        url,
                    }))
                    .collect();
                return Members::new(members.this.clone(), peers).map_err(|e| JoinError {
                    url: via.to_string(),
                    secs: 0,
                    last: e.to_string(),
                });
            }
            Err(last) if started.elapsed() > DISCOVER_FOR => {
                return Err(JoinError {
                    url: via.to_string(),
                    secs: DISCOVER_FOR.as_secs(),
                    last,
                });
            }
            Err(e) => {
                tracing::info!(via, error = %e, "cluster to join not reachable yet; retrying");
                tokio::time::sleep(RETRY_EVERY).await;
            }
        }
    }
}

/// Asks `via` for `{"id", "url", "voter"}` until a reply says it is done.
/// 409 (another change in flight), 503 and 504 are retried; any other
/// error is final.
async fn ask(
    client: &PeerClient,
    via: &str,
    this: &Member,
    voter: bool,
    stop: &watch::Receiver<bool>,
) -> bool {
    let body = json!({"id": this.name, "url": this.url, "voter": voter}).to_string();
    let url = format!("{via}/cluster/members");
    while !*stop.borrow() {
        let reply = client
            .request(
                Method::POST,
                &url,
                None,
                "application/json",
                body.clone().into_bytes(),
                REQUEST_TIMEOUT,
            )
            .await;
        match reply {
            Ok((status, _)) if status.is_success() => {
                tracing::info!(voter, "membership request accepted");
                return true;
            }
            Ok((
                StatusCode::CONFLICT
                | StatusCode::SERVICE_UNAVAILABLE
                | StatusCode::GATEWAY_TIMEOUT,
                text,
            )) => {
                let text = String::from_utf8_lossy(&text);
                tracing::info!(voter, reply = %text, "membership request not done yet; retrying");
            }
            Ok((status, text)) => {
                let text = String::from_utf8_lossy(&text);
                tracing::error!(voter, %status, reply = %text, "membership request refused");
                return false;
            }
            Err(e) => tracing::info!(voter, error = %e, "membership request failed; retrying"),
        }
        tokio::time::sleep(RETRY_EVERY).await;
    }
    false
}

/// Steps 2 and 3, in the background of a serving node.
pub async fn run(
    client: PeerClient,
    via: String,
    this: Member,
    auto_promote: bool,
    driver: DriverHandle,
    stop: watch::Receiver<bool>,
) {
    let status = loop {
        match driver.status().await {
            Ok(status) => break status,
            Err(_) if *stop.borrow() => return,
            Err(_) => tokio::time::sleep(RETRY_EVERY).await,
        }
    };
    let member = status.voters.contains(&this.id) || status.learners.contains(&this.id);
    let listed = members_of(&client, &via)
        .await
        .is_ok_and(|list| list.iter().any(|(name, _, _)| *name == this.name));
    if !member && !listed && !ask(&client, &via, &this, false, &stop).await {
        return;
    }
    if !auto_promote {
        return;
    }
    // Wait until this node is a caught-up learner (or already a voter).
    loop {
        if *stop.borrow() {
            return;
        }
        if let Ok(s) = driver.status().await {
            if s.voters.contains(&this.id) {
                return;
            }
            let caught_up = s.learners.contains(&this.id)
                && s.leader.is_some()
                && s.commit_index > 0
                && s.last_applied >= s.commit_index;
            if caught_up {
                break;
            }
        }
        tokio::time::sleep(RETRY_EVERY).await;
    }
    tracing::info!("caught up as a learner; asking to become a voter");
    ask(&client, &via, &this, true, &stop).await;
}
