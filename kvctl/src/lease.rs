//! The lease commands: grant, keepalive (once or in a loop), revoke, list
//! and get (API.md, "Leases").

use crate::Context;
use crate::cli::{LeaseCommand, Output};
use crate::client::Method;
use crate::client::{Call, Failure};
use crate::output::{cell, print_json, print_table};
use serde_json::{Value, json};
use std::time::Duration;

pub fn lease(ctx: &Context, command: &LeaseCommand) -> Result<u8, Failure> {
    match command {
        LeaseCommand::Grant { ttl } => grant(ctx, *ttl),
        LeaseCommand::Keepalive { id, once } => keepalive(ctx, *id, *once),
        LeaseCommand::Revoke { id } => revoke(ctx, *id),
        LeaseCommand::List => list(ctx),
        LeaseCommand::Get { id } => get(ctx, *id),
    }
}

fn grant(ctx: &Context, ttl: Duration) -> Result<u8, Failure> {
    let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
    // Not retried after a timeout: a second grant would be a second lease.
    let call = Call::write(
        Method::POST,
        "/lease".into(),
        Some(json!({ "ttl_ms": ttl_ms })),
        false,
    );
    let reply = ctx.client.send(&call)?;
    match ctx.output {
        Output::Json => print_json(&reply.body),
        // The bare id, so that `ID=$(kvctl lease grant 10s)` works.
        Output::Table => println!("{}", cell(reply.body.get("id"))),
    }
    Ok(0)
}

/// One keepalive, or (without `--once`) one every third of the TTL until
/// the process is interrupted or the lease is gone (exit 1,
/// `lease_not_found`). A keepalive that fails for another reason (no
/// leader for a moment) is reported and tried again at the next beat.
fn keepalive(ctx: &Context, id: u64, once: bool) -> Result<u8, Failure> {
    // A keepalive is idempotent: safe to send again after a timeout.
    let call = Call::write(Method::POST, format!("/lease/{id}/keepalive"), None, true);
    let reply = ctx.client.send(&call)?;
    print_keepalive(ctx, &reply.body);
    if once {
        return Ok(0);
    }
    let ttl_ms = reply
        .body
        .get("ttl_ms")
        .and_then(Value::as_u64)
        .unwrap_or(3_000);
    let beat = Duration::from_millis((ttl_ms / 3).max(1));
    loop {
        std::thread::sleep(beat);
        match ctx.client.send(&call) {
            Ok(reply) => print_keepalive(ctx, &reply.body),
            Err(Failure::Server(e)) if e.code == "lease_not_found" => {
                return Err(Failure::Server(e));
            }
            Err(failure) => eprintln!("keepalive failed, trying again in {beat:?}: {failure}"),
        }
    }
}

fn print_keepalive(ctx: &Context, body: &Value) {
    match ctx.output {
        Output::Json => print_json(body),
        Output::Table => println!(
            "kept alive id={} ttl_ms={}",
            cell(body.get("id")),
            cell(body.get("ttl_ms"))
        ),
    }
}

fn revoke(ctx: &Context, id: u64) -> Result<u8, Failure> {
    let call = Call::write(Method::DELETE, format!("/lease/{id}"), None, false);
    let reply = ctx.client.send(&call)?;
    match ctx.output {
        Output::Json => print_json(&reply.body),
        Output::Table => println!(
            "OK revision={} deleted={}",
            cell(reply.body.get("revision")),
            cell(reply.body.get("deleted"))
        ),
    }
    Ok(0)
}

fn list(ctx: &Context) -> Result<u8, Failure> {
    let reply = ctx.client.send(&Call::get("/lease".into()))?;
    match ctx.output {
        Output::Json => print_json(&reply.body),
        Output::Table => {
            let leases = reply.body.get("leases").and_then(Value::as_array);
            let rows: Vec<Vec<String>> = leases
                .into_iter()
                .flatten()
                .map(|lease| {
                    ["id", "ttl_ms", "remaining_ms"]
                        .iter()
                        .map(|field| cell(lease.get(*field)))
                        .collect()
                })
                .collect();
            print_table(&["ID", "TTL_MS", "REMAINING_MS"], &rows);
        }
    }
    Ok(0)
}

fn get(ctx: &Context, id: u64) -> Result<u8, Failure> {
    let reply = ctx.client.send(&Call::get(format!("/lease/{id}")))?;
    match ctx.output {
        Output::Json => print_json(&reply.body),
        Output::Table => {
            let keys: Vec<&str> = reply
                .body
                .get("keys")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            println!(
                "id={} ttl_ms={} remaining_ms={} keys={}",
                cell(reply.body.get("id")),
                cell(reply.body.get("ttl_ms")),
                cell(reply.body.get("remaining_ms")),
                keys.join(",")
            );
        }
    }
    Ok(0)
}
