//! Printing results: aligned tables for people, one line of JSON for tools.

use serde_json::Value;
use std::time::Duration;

/// Prints rows under a header, columns padded to their widest cell.
pub fn print_table(header: &[&str], rows: &[Vec<String>]) {
    print!("{}", render_table(header, rows));
}

pub fn render_table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(width) = widths.get_mut(i) {
                *width = (*width).max(cell.chars().count());
            }
        }
    }
    let mut out = String::new();
    let header: Vec<String> = header.iter().map(|h| h.to_string()).collect();
    for row in std::iter::once(&header).chain(rows) {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            if i > 0 {
                line.push_str("  ");
            }
            line.push_str(cell);
            if i + 1 < row.len() {
                let pad = widths[i].saturating_sub(cell.chars().count());
                line.extend(std::iter::repeat_n(' ', pad));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// One line of JSON on stdout.
pub fn print_json(value: &Value) {
    println!(
        "{}",
        serde_json::to_string(value).unwrap_or_else(|_| "null".into())
    );
}

/// A JSON string or null as people read it: `"v"` quoted and escaped, or `-`.
pub fn show_value(value: Option<&Value>) -> String {
    match value {
        None | Some(Value::Null) => "-".into(),
        Some(Value::String(s)) => format!("{s:?}"),
        Some(other) => other.to_string(),
    }
}

/// A table cell: strings without quotes but with control characters escaped
/// so that one entry stays on one line; numbers as they are; null as `-`.
pub fn cell(value: Option<&Value>) -> String {
    match value {
        None | Some(Value::Null) => "-".into(),
        Some(Value::String(s)) => s.escape_debug().to_string(),
        Some(other) => other.to_string(),
    }
}

pub fn millis(duration: Duration) -> String {
    format!("{:.2}ms", duration.as_secs_f64() * 1000.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn tables_pad_every_column_but_the_last() {
        let rows = vec![
            vec!["node1".into(), "leader".into(), "x".into()],
            vec!["n2".into(), "-".into(), "long last".into()],
        ];
        let text = render_table(&["ID", "ROLE", "NOTE"], &rows);
        assert_eq!(
            text,
            "ID     ROLE    NOTE\nnode1  leader  x\nn2     -       long last\n"
        );
    }

    #[test]
    fn cells_keep_an_entry_on_one_line() {
        assert_eq!(cell(Some(&json!("a\nb"))), "a\\nb");
        assert_eq!(cell(Some(&json!(7))), "7");
        assert_eq!(cell(None), "-");
        assert_eq!(show_value(Some(&json!("v"))), "\"v\"");
    }
}
