//! `kvctl txn`: a transaction as JSON (stdin or a file, the body of
//! `POST /txn`) or in a compact form:
//!
//! ```text
//! kvctl txn --if 'a == 1' --if 'b rev< 40' --then 'put a 2' --else 'get a'
//! ```
//!
//! A comparison is `KEY OP OPERAND`: `==` and `!=` compare the value (the
//! rest of the line, spaces included), `rev==`, `rev!=`, `rev<` and `rev>`
//! the key's revision (0 when absent). An op is `put KEY VALUE`,
//! `del KEY` or `get KEY`.

use crate::Context;
use crate::cli::{Output, TxnArgs};
use crate::client::Method;
use crate::client::{Call, Failure};
use crate::kv::{CAS_FAILED_EXIT, with_write_id};
use crate::output::{cell, print_json, show_value};
use serde_json::{Map, Value, json};
use std::io::Read;

pub fn txn(ctx: &Context, args: &TxnArgs) -> Result<u8, Failure> {
    let mut body = if args.compare.is_empty() && args.then.is_empty() && args.otherwise.is_empty() {
        read_json(args.file.as_deref())?
    } else {
        if args.file.is_some() {
            return Err(Failure::Usage(
                "give the transaction either as --if/--then/--else or as --file, not both".into(),
            ));
        }
        compact(args)?
    };
    let retry_safe = with_write_id(&mut body, &args.write_id);
    let call = Call::write(
        Method::POST,
        "/txn".into(),
        Some(Value::Object(body)),
        retry_safe,
    );
    let reply = ctx.client.send(&call)?;
    let succeeded = reply.body.get("succeeded").and_then(Value::as_bool) == Some(true);
    match ctx.output {
        Output::Json => print_json(&reply.body),
        Output::Table => {
            println!(
                "{} revision={}",
                if succeeded { "SUCCEEDED" } else { "FAILED" },
                cell(reply.body.get("revision"))
            );
            let results = reply.body.get("results").and_then(Value::as_array);
            for result in results.into_iter().flatten() {
                println!("{}", describe(result));
            }
        }
    }
    Ok(if succeeded { 0 } else { CAS_FAILED_EXIT })
}

fn describe(result: &Value) -> String {
    match result {
        Value::Null => "get: (absent)".into(),
        Value::Object(o) if o.contains_key("prev") => format!("prev={}", show_value(o.get("prev"))),
        Value::Object(o) => format!(
            "{} = {} (revision {})",
            cell(o.get("key")),
            cell(o.get("value")),
            cell(o.get("revision"))
        ),
        other => other.to_string(),
    }
}

/// The JSON body from a file, or from stdin when `path` is None or `-`.
fn read_json(path: Option<&str>) -> Result<Map<String, Value>, Failure> {
    let mut text = String::new();
    let source = match path {
        None | Some("-") => {
            std::io::stdin()
                .read_to_string(&mut text)
                .map_err(|e| Failure::Usage(format!("reading the transaction from stdin: {e}")))?;
            "stdin".to_string()
        }
        Some(path) => {
            text = std::fs::read_to_string(path)
                .map_err(|e| Failure::Usage(format!("reading {path}: {e}")))?;
            path.to_string()
        }
    };
    match serde_json::from_str::<Value>(&text) {
        Ok(Value::Object(body)) => Ok(body),
        Ok(_) => Err(Failure::Usage(format!(
            "{source}: a transaction is a JSON object"
        ))),
        Err(e) => Err(Failure::Usage(format!("{source}: malformed JSON: {e}"))),
    }
}

fn compact(args: &TxnArgs) -> Result<Map<String, Value>, Failure> {
    let compare = args
        .compare
        .iter()
        .map(|c| parse_compare(c))
        .collect::<Result<Vec<_>, _>>()
        .map_err(Failure::Usage)?;
    let ops = |list: &[String]| {
        list.iter()
            .map(|op| parse_op(op))
            .collect::<Result<Vec<_>, _>>()
            .map_err(Failure::Usage)
    };
    let mut body = Map::new();
    body.insert("compare".into(), Value::Array(compare));
    body.insert("success".into(), Value::Array(ops(&args.then)?));
    body.insert("failure".into(), Value::Array(ops(&args.otherwise)?));
    Ok(body)
}

/// Splits off the first word; the rest keeps its inner spaces.
fn word(text: &str) -> Option<(&str, &str)> {
    let text = text.trim_start();
    if text.is_empty() {
        return None;
    }
    Some(match text.split_once(char::is_whitespace) {
        Some((first, rest)) => (first, rest.trim_start()),
        None => (text, ""),
    })
}

fn parse_compare(text: &str) -> Result<Value, String> {
    let bad =
        || format!("--if {text:?}: expected KEY OP OPERAND, OP one of == != rev== rev!= rev< rev>");
    let (key, rest) = word(text).ok_or_else(bad)?;
    let (op, operand) = word(rest).ok_or_else(bad)?;
    match op {
        "==" | "!=" => Ok(json!({"key": key, "target": "value", "op": op, "value": operand})),
        "rev==" | "rev!=" | "rev<" | "rev>" => {
            let revision: u64 = operand
                .trim()
                .parse()
                .map_err(|_| format!("--if {text:?}: {operand:?} is not a revision"))?;
            Ok(json!({"key": key, "target": "revision", "op": &op[3..], "revision": revision}))
        }
        _ => Err(bad()),
    }
}

fn parse_op(text: &str) -> Result<Value, String> {
    let bad = || format!("{text:?}: expected `put KEY VALUE`, `del KEY` or `get KEY`");
    let (verb, rest) = word(text).ok_or_else(bad)?;
    let (key, value) = word(rest).ok_or_else(bad)?;
    match (verb, value) {
        ("put", value) => Ok(json!({"put": {"key": key, "value": value}})),
        ("del" | "delete", "") => Ok(json!({"delete": {"key": key}})),
        ("get", "") => Ok(json!({"get": {"key": key}})),
        _ => Err(bad()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compact_comparisons_become_the_json_of_the_contract() {
        assert_eq!(
            parse_compare("a == 1").unwrap(),
            json!({"key": "a", "target": "value", "op": "==", "value": "1"})
        );
        assert_eq!(
            parse_compare("greeting != hello world").unwrap(),
            json!({"key": "greeting", "target": "value", "op": "!=", "value": "hello world"})
        );
        assert_eq!(
            parse_compare("b rev< 40").unwrap(),
            json!({"key": "b", "target": "revision", "op": "<", "revision": 40})
        );
        assert_eq!(
            parse_compare("lock rev== 0").unwrap(),
            json!({"key": "lock", "target": "revision", "op": "==", "revision": 0})
        );
        for bad in ["", "a", "a <= 1", "a rev< x", "a rev> -1"] {
            assert!(parse_compare(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn compact_ops_become_the_json_of_the_contract() {
        assert_eq!(
            parse_op("put a two words").unwrap(),
            json!({"put": {"key": "a", "value": "two words"}})
        );
        assert_eq!(
            parse_op("put a").unwrap(),
            json!({"put": {"key": "a", "value": ""}})
        );
        assert_eq!(parse_op("del a").unwrap(), json!({"delete": {"key": "a"}}));
        assert_eq!(parse_op("get a").unwrap(), json!({"get": {"key": "a"}}));
        for bad in ["", "put", "get a b", "del", "upsert a 1"] {
            assert!(parse_op(bad).is_err(), "{bad:?}");
        }
    }
}
