//! Cluster and operations commands: member, status, transfer-leader,
//! snapshot and read-policy.

use crate::Context;
use crate::cli::{Consistency, MemberCommand, Output};
use crate::client::Method;
use crate::client::{Attempt, CREDENTIALS_EXIT, Call, Failure, encode};
use crate::output::{cell, print_json, print_table};
use serde_json::{Value, json};

pub fn member(ctx: &Context, command: &MemberCommand) -> Result<u8, Failure> {
    match command {
        MemberCommand::List => member_list(ctx),
        MemberCommand::Add { id, url, learner } => {
            let body = json!({"id": id, "url": url, "voter": !learner});
            let call = Call::write(Method::POST, "/cluster/members".into(), Some(body), false);
            let reply = ctx.client.send(&call)?;
            let role = if *learner { "learner" } else { "voter" };
            report(
                ctx,
                &reply.body,
                &format!("OK added {id} at {url} as a {role}"),
            );
            Ok(0)
        }
        MemberCommand::Remove { id } => {
            let path = format!("/cluster/members/{}", encode(id));
            let reply = ctx
                .client
                .send(&Call::write(Method::DELETE, path, None, false))?;
            report(ctx, &reply.body, &format!("OK removed {id}"));
            Ok(0)
        }
        MemberCommand::Promote { id } => promote(ctx, id),
    }
}

fn report(ctx: &Context, body: &Value, line: &str) {
    match ctx.output {
        Output::Json => print_json(body),
        Output::Table => println!("{line}"),
    }
}

fn members(ctx: &Context) -> Result<Value, Failure> {
    Ok(ctx.client.send(&Call::get("/cluster/members".into()))?.body)
}

fn member_list(ctx: &Context) -> Result<u8, Failure> {
    let body = members(ctx)?;
    if ctx.output == Output::Json {
        print_json(&body);
        return Ok(0);
    }
    let rows: Vec<Vec<String>> = member_entries(&body)
        .iter()
        .map(|m| {
            let voter = m.get("voter").and_then(Value::as_bool) == Some(true);
            let role = if voter { "voter" } else { "learner" };
            vec![cell(m.get("id")), cell(m.get("url")), role.to_string()]
        })
        .collect();
    print_table(&["ID", "URL", "ROLE"], &rows);
    Ok(0)
}

fn member_entries(body: &Value) -> Vec<Value> {
    body.get("members")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

/// Promotion is an add with `"voter": true` for a member that is a learner
/// now; its URL comes from the member list, as the server knows it.
fn promote(ctx: &Context, id: &str) -> Result<u8, Failure> {
    let body = members(ctx)?;
    let entries = member_entries(&body);
    let Some(member) = entries
        .iter()
        .find(|m| m.get("id").and_then(Value::as_str) == Some(id))
    else {
        return Err(Failure::Client(format!("{id} is not a member")));
    };
    if member.get("voter").and_then(Value::as_bool) == Some(true) {
        report(ctx, member, &format!("OK {id} is already a voter"));
        return Ok(0);
    }
    let mut request = json!({"id": id, "voter": true});
    if let Some(url) = member.get("url").filter(|u| !u.is_null()) {
        request["url"] = url.clone();
    }
    let call = Call::write(
        Method::POST,
        "/cluster/members".into(),
        Some(request),
        false,
    );
    let reply = ctx.client.send(&call)?;
    report(ctx, &reply.body, &format!("OK promoted {id} to voter"));
    Ok(0)
}

/// Sends `call` to every endpoint at once, answers in endpoint order.
fn each_endpoint(ctx: &Context, call: &Call) -> Vec<(String, Attempt)> {
    std::thread::scope(|scope| {
        let handles: Vec<_> = ctx
            .client
            .endpoints
            .iter()
            .map(|endpoint| {
                scope.spawn(move || (endpoint.clone(), ctx.client.attempt(endpoint, call)))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("a request thread panicked"))
            .collect()
    })
}

/// 0 when every node answered (`status`: when any did), 5 when a node
/// refused the credentials or a handshake failed, 3 when none could be
/// reached, 1 otherwise.
fn exit_code(attempts: &[(String, Attempt)], any_answer_is_enough: bool) -> u8 {
    let answered = attempts
        .iter()
        .filter(|(_, a)| matches!(a, Attempt::Answered(_)))
        .count();
    let refused = attempts
        .iter()
        .any(|(_, a)| matches!(a, Attempt::Refused(_)));
    if answered == attempts.len() || (any_answer_is_enough && answered > 0) {
        0
    } else if attempts.iter().any(|(_, a)| a.is_credentials_failure()) {
        CREDENTIALS_EXIT
    } else if answered == 0 && !refused {
        3
    } else {
        1
    }
}

/// The JSON of one node's answer, for `--output json`.
fn attempt_json(endpoint: &str, attempt: &Attempt) -> Value {
    match attempt {
        Attempt::Answered(reply) => json!({"endpoint": endpoint, "reply": reply.body}),
        Attempt::Refused(e) => json!({"endpoint": endpoint, "error": e.body}),
        Attempt::NotSent(reason) | Attempt::MaybeSent(reason) => {
            json!({"endpoint": endpoint, "unreachable": reason})
        }
        Attempt::TlsFailed(reason) => json!({"endpoint": endpoint, "tls_error": reason}),
    }
}

/// A failed node in a table: what to show in the row, and a line on stderr.
fn failure_cell(ctx: &Context, endpoint: &str, attempt: &Attempt) -> Option<&'static str> {
    match attempt {
        Attempt::Answered(_) => None,
        Attempt::Refused(e) if e.is_credentials() => {
            eprintln!("{}", e.credentials_message(ctx.client.has_token()));
            Some("REFUSED")
        }
        Attempt::Refused(e) => {
            eprintln!("{endpoint}: {}: {}", e.code, e.message);
            Some("ERROR")
        }
        Attempt::TlsFailed(reason) => {
            eprintln!("{endpoint}: {reason}");
            Some("TLS ERROR")
        }
        Attempt::NotSent(reason) | Attempt::MaybeSent(reason) => {
            eprintln!("{endpoint}: unreachable: {reason}");
            Some("UNREACHABLE")
        }
    }
}

fn finish(ctx: &Context, attempts: &[(String, Attempt)], any_answer_is_enough: bool) -> u8 {
    if ctx.output == Output::Json {
        let all: Vec<Value> = attempts.iter().map(|(e, a)| attempt_json(e, a)).collect();
        print_json(&Value::Array(all));
    }
    exit_code(attempts, any_answer_is_enough)
}

pub fn status(ctx: &Context) -> Result<u8, Failure> {
    let attempts = each_endpoint(ctx, &Call::get("/status".into()));
    if ctx.output == Output::Table {
        let mut rows = Vec::new();
        for (endpoint, attempt) in &attempts {
            rows.push(match (attempt, failure_cell(ctx, endpoint, attempt)) {
                (Attempt::Answered(reply), _) => {
                    let s = &reply.body;
                    vec![
                        cell(s.get("id")),
                        endpoint.clone(),
                        cell(s.get("role")),
                        cell(s.get("term")),
                        cell(s.get("commit_index")),
                        cell(s.get("last_applied")),
                        cell(s.get("leader")),
                    ]
                }
                (_, failed) => {
                    let mut row = vec!["-".to_string(); 7];
                    row[1] = endpoint.clone();
                    row[2] = failed.unwrap_or("ERROR").to_string();
                    row
                }
            });
        }
        let header = ["ID", "URL", "ROLE", "TERM", "COMMIT", "APPLIED", "LEADER"];
        print_table(&header, &rows);
    }
    Ok(finish(ctx, &attempts, true))
}

/// Sends the transfer to the node that says it is the leader, when one of
/// the endpoints does; otherwise to the endpoints in order.
pub fn transfer_leader(ctx: &Context, to: &str) -> Result<u8, Failure> {
    let call = Call::write(
        Method::POST,
        "/cluster/transfer-leader".into(),
        Some(json!({"to": to})),
        true,
    );
    let leader = each_endpoint(ctx, &Call::get("/status".into()))
        .into_iter()
        .find_map(|(endpoint, attempt)| match attempt {
            Attempt::Answered(r) if r.body.get("role") == Some(&json!("leader")) => Some(endpoint),
            _ => None,
        });
    let reply = match leader.map(|endpoint| ctx.client.attempt(&endpoint, &call)) {
        Some(Attempt::Answered(reply)) => reply,
        Some(Attempt::Refused(error)) if error.is_credentials() => {
            return Err(Failure::Credentials {
                error,
                token_given: ctx.client.has_token(),
            });
        }
        Some(Attempt::Refused(e)) => return Err(Failure::Server(e)),
        Some(_) | None => ctx.client.send(&call)?,
    };
    report(
        ctx,
        &reply.body,
        &format!("OK leadership transferred to {to}"),
    );
    Ok(0)
}

pub fn snapshot(ctx: &Context) -> Result<u8, Failure> {
    let call = Call::write(Method::POST, "/admin/snapshot".into(), None, true);
    let attempts = each_endpoint(ctx, &call);
    if ctx.output == Output::Table {
        let rows: Vec<Vec<String>> = attempts
            .iter()
            .map(|(endpoint, attempt)| match attempt {
                Attempt::Answered(r) => {
                    let taken = r.body.get("taken").and_then(Value::as_bool) == Some(true);
                    let what = if taken { "taken" } else { "nothing new" };
                    vec![
                        endpoint.clone(),
                        what.into(),
                        cell(r.body.get("snapshot_index")),
                    ]
                }
                other => {
                    let failed = failure_cell(ctx, endpoint, other).unwrap_or("ERROR");
                    vec![endpoint.clone(), failed.into(), "-".into()]
                }
            })
            .collect();
        print_table(&["URL", "SNAPSHOT", "INDEX"], &rows);
    }
    Ok(finish(ctx, &attempts, false))
}

pub fn read_policy(ctx: &Context, policy: Option<Consistency>) -> Result<u8, Failure> {
    let call = match policy {
        None => Call::get("/admin/read-policy".into()),
        Some(p) => Call::write(
            Method::PUT,
            "/admin/read-policy".into(),
            Some(json!({"policy": p.as_str()})),
            true,
        ),
    };
    let attempts = each_endpoint(ctx, &call);
    if ctx.output == Output::Table {
        let rows: Vec<Vec<String>> = attempts
            .iter()
            .map(|(endpoint, attempt)| match attempt {
                Attempt::Answered(r) => vec![endpoint.clone(), cell(r.body.get("policy"))],
                other => {
                    let failed = failure_cell(ctx, endpoint, other).unwrap_or("ERROR");
                    vec![endpoint.clone(), failed.into()]
                }
            })
            .collect();
        print_table(&["URL", "READ POLICY"], &rows);
    }
    Ok(finish(ctx, &attempts, false))
}
