//! The key-value commands: put, get, del, cas, scan, mput.

use crate::Context;
use crate::cli::{CasArgs, Consistency, Output, WriteId};
use crate::client::Method;
use crate::client::{Call, Failure, encode};
use crate::output::{cell, print_json, print_table, show_value};
use serde_json::{Map, Value, json};

/// Exit code of a `cas` whose comparison failed (see `--help`).
pub const CAS_FAILED_EXIT: u8 = 4;

/// Adds `client_id` and `seq` to a write body; returns whether the write may
/// be retried on another endpoint after a timeout.
pub(crate) fn with_write_id(body: &mut Map<String, Value>, write_id: &WriteId) -> bool {
    match (&write_id.client_id, write_id.seq) {
        (Some(client_id), Some(seq)) => {
            body.insert("client_id".into(), json!(client_id));
            body.insert("seq".into(), json!(seq));
            true
        }
        _ => false,
    }
}

fn query(params: &[(&str, Option<String>)]) -> String {
    let pairs: Vec<String> = params
        .iter()
        .filter_map(|(name, value)| value.as_ref().map(|v| format!("{name}={}", encode(v))))
        .collect();
    if pairs.is_empty() {
        String::new()
    } else {
        format!("?{}", pairs.join("&"))
    }
}

fn consistency_param(consistency: Option<Consistency>) -> Option<String> {
    consistency.map(|c| c.as_str().to_string())
}

pub fn put(
    ctx: &Context,
    key: &str,
    value: &str,
    lease: Option<u64>,
    write_id: &WriteId,
) -> Result<u8, Failure> {
    let mut body = Map::new();
    body.insert("value".into(), json!(value));
    if let Some(lease) = lease {
        body.insert("lease".into(), json!(lease));
    }
    let retry_safe = with_write_id(&mut body, write_id);
    let path = format!("/kv/{}", encode(key));
    let call = Call::write(Method::PUT, path, Some(Value::Object(body)), retry_safe);
    let reply = ctx.client.send(&call)?;
    print_write(ctx, &reply.body);
    Ok(0)
}

pub fn get(ctx: &Context, key: &str, consistency: Option<Consistency>) -> Result<u8, Failure> {
    let path = format!(
        "/kv/{}{}",
        encode(key),
        query(&[("consistency", consistency_param(consistency))])
    );
    let reply = ctx.client.send(&Call::get(path))?;
    match ctx.output {
        Output::Json => print_json(&reply.body),
        // The bare value, so that `$(kvctl get k)` is the value.
        Output::Table => match reply.body.get("value") {
            Some(Value::String(value)) => println!("{value}"),
            other => println!("{}", cell(other)),
        },
    }
    Ok(0)
}

pub fn del(ctx: &Context, key: &str, write_id: &WriteId) -> Result<u8, Failure> {
    let mut body = Map::new();
    let retry_safe = with_write_id(&mut body, write_id);
    let body = (!body.is_empty()).then_some(Value::Object(body));
    let path = format!("/kv/{}", encode(key));
    let reply = ctx
        .client
        .send(&Call::write(Method::DELETE, path, body, retry_safe))?;
    print_write(ctx, &reply.body);
    Ok(0)
}

/// Prints a put's or delete's answer: `OK revision=R prev=V` or its JSON.
fn print_write(ctx: &Context, body: &Value) {
    match ctx.output {
        Output::Json => print_json(body),
        Output::Table => println!(
            "OK revision={} prev={}",
            cell(body.get("revision")),
            show_value(body.get("prev"))
        ),
    }
}

/// Sends `{"expected": OLD or null, "value": NEW or null}`. A failed
/// comparison prints the current value and returns `CAS_FAILED_EXIT`.
pub fn cas(ctx: &Context, args: &CasArgs) -> Result<u8, Failure> {
    let mut body = Map::new();
    body.insert("expected".into(), json!(args.expected));
    body.insert("value".into(), json!(args.value));
    let retry_safe = with_write_id(&mut body, &args.write_id);
    let path = format!("/kv/{}/cas", encode(&args.key));
    let call = Call::write(Method::POST, path, Some(Value::Object(body)), retry_safe);
    let reply = ctx.client.send(&call)?;
    let succeeded = reply.body.get("succeeded").and_then(Value::as_bool) == Some(true);
    match ctx.output {
        Output::Json => print_json(&reply.body),
        Output::Table => println!(
            "{} revision={} current={}",
            if succeeded { "OK" } else { "FAILED" },
            cell(reply.body.get("revision")),
            show_value(reply.body.get("current"))
        ),
    }
    Ok(if succeeded { 0 } else { CAS_FAILED_EXIT })
}

pub fn scan(
    ctx: &Context,
    prefix: &str,
    limit: Option<usize>,
    consistency: Option<Consistency>,
) -> Result<u8, Failure> {
    let path = format!(
        "/kv{}",
        query(&[
            ("prefix", Some(prefix.to_string())),
            ("limit", limit.map(|l| l.to_string())),
            ("consistency", consistency_param(consistency)),
        ])
    );
    let reply = ctx.client.send(&Call::get(path))?;
    if ctx.output == Output::Json {
        print_json(&reply.body);
        return Ok(0);
    }
    let entries = reply
        .body
        .get("entries")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let rows: Vec<Vec<String>> = entries
        .iter()
        .map(|e| {
            vec![
                cell(e.get("key")),
                cell(e.get("value")),
                cell(e.get("revision")),
            ]
        })
        .collect();
    if !rows.is_empty() {
        print_table(&["KEY", "VALUE", "REVISION"], &rows);
    }
    if reply.body.get("more").and_then(Value::as_bool) == Some(true) {
        eprintln!("(more keys follow; raise --limit or scan a longer prefix)");
    }
    Ok(0)
}

pub fn mput(
    ctx: &Context,
    entries: &[(String, String)],
    write_id: &WriteId,
) -> Result<u8, Failure> {
    let entries: Vec<Value> = entries
        .iter()
        .map(|(key, value)| json!({"key": key, "value": value}))
        .collect();
    let count = entries.len();
    let mut body = Map::new();
    body.insert("entries".into(), Value::Array(entries));
    let retry_safe = with_write_id(&mut body, write_id);
    let call = Call::write(
        Method::POST,
        "/kv/mput".into(),
        Some(Value::Object(body)),
        retry_safe,
    );
    let reply = ctx.client.send(&call)?;
    match ctx.output {
        Output::Json => print_json(&reply.body),
        Output::Table => println!(
            "OK revision={} keys={count}",
            cell(reply.body.get("revision"))
        ),
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_leave_out_absent_parameters_and_encode_values() {
        assert_eq!(query(&[("a", None)]), "");
        assert_eq!(
            query(&[
                ("prefix", Some("a b".into())),
                ("limit", None),
                ("x", Some("1".into()))
            ]),
            "?prefix=a%20b&x=1"
        );
    }
}
