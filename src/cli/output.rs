//! How `keybound admin` prints the issuer's answers: `--output table`
//! (aligned columns for people, times as ISO 8601 UTC), `json` (the
//! issuer's JSON as it came, pretty-printed, times in Unix seconds) or
//! `value` (the bare values, one row per line, separated by spaces, for
//! shell scripts). The default is `table` when stdout is a terminal and
//! `json` when it is not, so scripts that read today's JSON keep working.
//! `--column NAME` picks the columns of `table` and `value`.

use std::io::IsTerminal;

use serde_json::Value;

use crate::cli::render::utc;

/// `--output`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Format {
    /// Aligned columns with a header; times as ISO 8601 UTC
    Table,
    /// The issuer's JSON, pretty-printed; times as Unix seconds
    Json,
    /// Bare values: one row per line, fields separated by a space; times as Unix seconds
    Value,
}

impl Format {
    /// The format asked for, else table on a terminal and JSON elsewhere.
    pub(crate) fn or_default(asked: Option<Format>) -> Format {
        asked.unwrap_or_else(|| {
            if std::io::stdout().is_terminal() {
                Format::Table
            } else {
                Format::Json
            }
        })
    }
}

/// The order columns appear in, whatever the object's own order; members
/// not named here follow, alphabetically.
const COLUMN_ORDER: &[&str] = &[
    "id",
    "time",
    "user",
    "name",
    "issuer",
    "origin",
    "project",
    "domain",
    "role",
    "audience",
    "trustor",
    "trustee",
    "roles",
    "audiences",
    "kind",
    "enabled",
    "domain_enabled",
    "has_password",
    "actor",
    "action",
    "target",
    "outcome",
    "client",
    "key_thumbprint",
    "thumbprint",
    "count",
    "added_at",
    "created_at",
    "expires_at",
    "remaining_uses",
    "redelegation",
    "parent",
    "keys_url",
    "domains",
    "projects",
    "max_lifetime",
];

/// Whether a member holds a time in Unix seconds (shown as ISO 8601 in tables).
fn is_time(key: &str) -> bool {
    key == "time" || key.ends_with("_at") || key.ends_with("_until")
}

fn rank(key: &str) -> (usize, &str) {
    (
        COLUMN_ORDER
            .iter()
            .position(|k| *k == key)
            .unwrap_or(COLUMN_ORDER.len()),
        key,
    )
}

/// Renders an answer of the issuer. `columns` (possibly empty: all) names
/// the members `table` and `value` show; a name no row has is an error.
pub(crate) fn render(answer: &Value, format: Format, columns: &[String]) -> Result<String, String> {
    if format == Format::Json {
        return Ok(serde_json::to_string_pretty(answer).unwrap_or_default());
    }
    let table = format == Format::Table;
    match answer {
        Value::Array(items) if items.is_empty() => Ok(if table { "(none)".to_owned() } else { String::new() }),
        Value::Array(items) if items.iter().all(Value::is_object) => {
            let keys = pick(column_keys(items.iter()), columns)?;
            let rows: Vec<Vec<String>> = items
                .iter()
                .map(|item| keys.iter().map(|k| cell(k, &item[k.as_str()], table)).collect())
                .collect();
            Ok(if table {
                aligned(&keys, &rows)
            } else {
                rows.iter().map(|r| r.join(" ")).collect::<Vec<_>>().join("\n")
            })
        }
        Value::Array(items) => {
            // A list of names: one per line, under its header in a table.
            if let Some(c) = columns.first() {
                return Err(format!("--column {c}: this answer is a list of names, without columns"));
            }
            let lines: Vec<String> = items.iter().map(|v| cell("", v, table)).collect();
            Ok(if table {
                aligned(
                    &["name".to_owned()],
                    &lines.into_iter().map(|l| vec![l]).collect::<Vec<_>>(),
                )
            } else {
                lines.join("\n")
            })
        }
        Value::Object(map) => {
            // One object: a FIELD VALUE table of its scalar members (nested
            // objects as `outer.inner`), then a table per list of objects.
            let mut fields: Vec<(String, Value)> = Vec::new();
            let mut lists: Vec<(String, Vec<Value>)> = Vec::new();
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort_by_key(|k| rank(k));
            for key in keys {
                match &map[key] {
                    Value::Object(inner) => {
                        let mut inner_keys: Vec<&String> = inner.keys().collect();
                        inner_keys.sort_by_key(|k| rank(k));
                        for k in inner_keys {
                            fields.push((format!("{key}.{k}"), inner[k].clone()));
                        }
                    }
                    Value::Array(items) if !items.is_empty() && items.iter().all(Value::is_object) => {
                        lists.push((key.clone(), items.clone()));
                    }
                    other => fields.push((key.clone(), other.clone())),
                }
            }
            let names: Vec<String> = fields.iter().map(|(k, _)| k.clone()).collect();
            let shown = pick(names, columns)?;
            let value_of = |k: &str| {
                fields
                    .iter()
                    .find(|(name, _)| name == k)
                    .map(|(name, v)| cell(name.rsplit('.').next().unwrap_or(name), v, table))
                    .unwrap_or_default()
            };
            if !table {
                return Ok(shown.iter().map(|k| value_of(k)).collect::<Vec<_>>().join("\n"));
            }
            let rows: Vec<Vec<String>> = shown.iter().map(|k| vec![k.clone(), value_of(k)]).collect();
            let mut out = aligned(&["field".to_owned(), "value".to_owned()], &rows);
            if columns.is_empty() {
                for (name, items) in lists {
                    let keys = column_keys(items.iter());
                    let rows: Vec<Vec<String>> = items
                        .iter()
                        .map(|item| keys.iter().map(|k| cell(k, &item[k.as_str()], true)).collect())
                        .collect();
                    out.push_str(&format!("\n\n{}:\n{}", name, aligned(&keys, &rows)));
                }
            }
            Ok(out)
        }
        other => Ok(cell("", other, table)),
    }
}

/// The members of a list of objects, in [`COLUMN_ORDER`].
fn column_keys<'a>(items: impl Iterator<Item = &'a Value>) -> Vec<String> {
    let mut keys: Vec<String> = Vec::new();
    for item in items {
        for key in item.as_object().into_iter().flat_map(|m| m.keys()) {
            if !keys.contains(key) {
                keys.push(key.clone());
            }
        }
    }
    keys.sort_by(|a, b| rank(a).cmp(&rank(b)));
    keys
}

/// The columns asked for, in the order asked, or all of them.
fn pick(available: Vec<String>, asked: &[String]) -> Result<Vec<String>, String> {
    if asked.is_empty() {
        return Ok(available);
    }
    asked
        .iter()
        .map(|c| {
            if available.contains(c) {
                Ok(c.clone())
            } else {
                Err(format!(
                    "--column {c}: no such column; there are {}",
                    available.join(", ")
                ))
            }
        })
        .collect()
}

/// One value as a cell: text as it is, lists joined with commas, null as
/// `-`, times as ISO 8601 UTC in tables.
fn cell(key: &str, value: &Value, table: bool) -> String {
    match value {
        Value::Null => "-".to_owned(),
        Value::String(s) => s.clone(),
        Value::Number(n) if table && is_time(key) => n.as_i64().map_or_else(|| n.to_string(), utc),
        Value::Array(items) if items.is_empty() => "-".to_owned(),
        Value::Array(items) => items.iter().map(|v| cell(key, v, table)).collect::<Vec<_>>().join(","),
        other => other.to_string(),
    }
}

/// A header of upper-case titles and the rows, in columns two spaces apart.
fn aligned(keys: &[String], rows: &[Vec<String>]) -> String {
    let titles: Vec<String> = keys.iter().map(|k| k.replace('_', " ").to_uppercase()).collect();
    let mut widths: Vec<usize> = titles.iter().map(|t| t.chars().count()).collect();
    for row in rows {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: &[String]| {
        let last = cells.len().saturating_sub(1);
        cells
            .iter()
            .enumerate()
            .map(|(i, c)| {
                if i == last {
                    c.clone()
                } else {
                    format!("{c:<width$}", width = widths[i])
                }
            })
            .collect::<Vec<_>>()
            .join("  ")
    };
    let mut out = vec![line(&titles)];
    out.extend(rows.iter().map(|r| line(r)));
    out.join("\n")
}

/// A time argument: Unix seconds, or ISO 8601 UTC (`2026-12-02T04:23:46Z`,
/// or a date alone for its midnight).
pub(crate) fn parse_time(text: &str) -> Result<i64, String> {
    if let Ok(n) = text.parse::<i64>() {
        return Ok(n);
    }
    let bad = || format!("{text:?} is neither Unix seconds nor a UTC time like 2026-12-02T04:23:46Z");
    let (date, time) = match text.split_once('T') {
        Some((d, t)) => (d, t.strip_suffix('Z').ok_or_else(bad)?),
        None => (text, "00:00:00"),
    };
    let numbers = |s: &str, sep: char| -> Option<Vec<i64>> { s.split(sep).map(|p| p.parse().ok()).collect() };
    let (d, t) = (numbers(date, '-').ok_or_else(bad)?, numbers(time, ':').ok_or_else(bad)?);
    let [year, month, day] = <[i64; 3]>::try_from(d).map_err(|_| bad())?;
    let [hour, minute, second] = <[i64; 3]>::try_from(t).map_err(|_| bad())?;
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || minute > 59 || second > 60 {
        return Err(bad());
    }
    // Days from civil (the inverse of `render::utc`).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let unix = days * 86_400 + hour * 3600 + minute * 60 + second;
    // A day past the month's end comes out as another date.
    if utc(unix) != format!("{year:04}-{month:02}-{day:02}T{hour:02}:{minute:02}:{second:02}Z") {
        return Err(bad());
    }
    Ok(unix)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn lists_of_objects_are_tables_with_utc_times() {
        let users = json!([
            {"user": "ayoung@stoughton", "kind": "person", "enabled": true, "has_password": true},
            {"user": "nova@stoughton", "kind": "service", "enabled": false, "has_password": false},
        ]);
        let table = render(&users, Format::Table, &[]).unwrap();
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines[0], "USER              KIND     ENABLED  HAS PASSWORD");
        assert_eq!(lines[2], "nova@stoughton    service  false    false");
        let audit = json!([{"id": 7, "time": 1_763_803_600, "actor": "a@b", "action": "grant", "target": "-", "outcome": "ok", "client": "127.0.0.1", "key_thumbprint": "-", "count": 1}]);
        let table = render(&audit, Format::Table, &[]).unwrap();
        assert!(
            table
                .lines()
                .nth(1)
                .unwrap()
                .starts_with("7   2025-11-22T09:26:40Z  a@b"),
            "{table}"
        );
        assert_eq!(
            render(&audit, Format::Value, &["id".into(), "time".into()]).unwrap(),
            "7 1763803600"
        );
        assert_eq!(
            render(&audit, Format::Json, &[]).unwrap(),
            serde_json::to_string_pretty(&audit).unwrap()
        );
    }

    #[test]
    fn names_objects_and_unknown_columns() {
        let roles = json!(["admin", "member"]);
        assert_eq!(render(&roles, Format::Value, &[]).unwrap(), "admin\nmember");
        assert_eq!(render(&roles, Format::Table, &[]).unwrap(), "NAME\nadmin\nmember");
        let user = json!({"user": "ayoung@stoughton", "created_at": 0, "lockout": {"locked": false, "locked_until": null},
            "grants": [{"project": "turing@stoughton", "role": "member"}], "keys": []});
        let table = render(&user, Format::Table, &[]).unwrap();
        let row = |field: &str| {
            table
                .lines()
                .find(|l| l.split_whitespace().next() == Some(field))
                .map(str::to_owned)
        };
        assert!(
            row("created_at").unwrap().ends_with("  1970-01-01T00:00:00Z"),
            "{table}"
        );
        assert!(row("lockout.locked_until").unwrap().ends_with("  -"), "{table}");
        assert!(
            table.contains("grants:\nPROJECT           ROLE\nturing@stoughton  member"),
            "{table}"
        );
        assert_eq!(
            render(&user, Format::Value, &["user".into()]).unwrap(),
            "ayoung@stoughton"
        );
        let refused = render(&user, Format::Table, &["nope".into()]).unwrap_err();
        assert!(refused.starts_with("--column nope: no such column"), "{refused}");
    }

    #[test]
    fn times_parse_as_unix_seconds_or_utc() {
        assert_eq!(parse_time("1763803600"), Ok(1_763_803_600));
        assert_eq!(parse_time("2025-11-22T09:26:40Z"), Ok(1_763_803_600));
        assert_eq!(parse_time("2000-02-29"), Ok(951_782_400));
        for bad in [
            "yesterday",
            "2025-13-01",
            "2025-11-22T09:26:40",
            "2025-02-30T00:00:01Z",
            "2025-02-30",
        ] {
            assert!(parse_time(bad).is_err(), "{bad}");
        }
    }
}
