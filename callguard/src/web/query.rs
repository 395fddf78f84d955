//! Listing semantics of the seeds, applied to rows as JSON objects (collections are small: the
//! whole rule model fits in memory, and one implementation serves every resource).
//!
//! **PortSIP lists** (`filter`, `search`, `orderby`, `skip`, `top`):
//! - `filter`: conditions `FIELD OP VALUE` joined by ` and `; `OP` is `eq`, `ne`, `lt`, `le`,
//!   `gt`, `ge`, `startswith` or `contains`; `VALUE` is `'quoted'` (`''` for a quote) or bare.
//!   Example: `number_prefix startswith '+90' and description contains 'premium'`.
//! - `search`: a case-insensitive substring of any text field.
//! - `orderby`: `FIELD [asc|desc]`, comma-separated; ascending by default.
//! - `skip` (default 0) and `top` (1 to 100, default 100); `count` is the total before paging.
//!
//! **Border-rule lists** (`filter`, `mask`, `offset`, `limit`, `order`, `flat`):
//! - `filter`: a JSON object of field values that must all be equal (`{"action":"drop"}`;
//!   nested `{"opts":{"title":"x"}}` or dotted `{"opts.title":"x"}`).
//! - `mask`: comma-separated fields to output (dotted for nested ones: `opts.title`).
//! - `order`: a field, `-field` for descending, or a JSON array of those or of
//!   `{"field": "asc"|"desc"}` objects.
//! - `offset` (default 0), `limit` (1 to 10000, default all).
//! - `flat`: nested objects become dotted keys (`"opts.title": ""`).

use std::cmp::Ordering;

use serde::Serialize;
use serde_json::{Map, Value};

use crate::api::{border::BorderQuery, query::ListQuery};
use crate::web::Failure;

/// The value at a dotted path.
fn at<'a>(v: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.').try_fold(v, |v, k| v.get(k))
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        v => v.to_string(),
    }
}

/// Compares two texts of `field`: ids (`id`, which the seeds serve as strings of digits) by
/// their number, so that `2` comes before `10`; everything else as text.
fn text_cmp(field: &str, a: &str, b: &str) -> Ordering {
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|c| c.is_ascii_digit());
    if field == "id" && digits(a) && digits(b) {
        let (x, y) = (a.trim_start_matches('0'), b.trim_start_matches('0'));
        return x.len().cmp(&y.len()).then_with(|| x.cmp(y)).then_with(|| a.cmp(b));
    }
    a.cmp(b)
}

fn compare(field: &str, a: Option<&Value>, b: Option<&Value>) -> Ordering {
    match (a, b) {
        (Some(Value::Number(x)), Some(Value::Number(y))) => {
            x.as_f64().unwrap_or(0.0).partial_cmp(&y.as_f64().unwrap_or(0.0)).unwrap_or(Ordering::Equal)
        }
        (a, b) => text_cmp(field, &a.map(text).unwrap_or_default(), &b.map(text).unwrap_or_default()),
    }
}

/// One filter condition.
#[derive(Debug)]
struct Cond {
    field: String,
    op: String,
    value: String,
}

fn tokens(s: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut chars = s.chars().peekable();
    while let Some(&c) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
        } else if c == '\'' {
            chars.next();
            let mut t = String::new();
            loop {
                match chars.next() {
                    None => return Err("a quoted value is not closed".into()),
                    Some('\'') if chars.peek() == Some(&'\'') => {
                        chars.next();
                        t.push('\'');
                    }
                    Some('\'') => break,
                    Some(c) => t.push(c),
                }
            }
            out.push(format!("'{t}"));
        } else {
            let mut t = String::new();
            while let Some(&c) = chars.peek() {
                if c.is_whitespace() {
                    break;
                }
                t.push(c);
                chars.next();
            }
            out.push(t);
        }
    }
    Ok(out)
}

const OPS: [&str; 8] = ["eq", "ne", "lt", "le", "gt", "ge", "startswith", "contains"];

fn parse_filter(s: &str, fields: &[&str]) -> Result<Vec<Cond>, String> {
    let t = tokens(s)?;
    let mut conds = Vec::new();
    let mut i = 0;
    while i < t.len() {
        if i > 0 {
            if !t[i].eq_ignore_ascii_case("and") {
                return Err(format!("expected `and` before `{}`", t[i]));
            }
            i += 1;
        }
        let [field, op, value] = [t.get(i), t.get(i + 1), t.get(i + 2)];
        let (Some(field), Some(op), Some(value)) = (field, op, value) else {
            return Err("a condition is FIELD OP VALUE".into());
        };
        if !fields.contains(&field.as_str()) {
            return Err(format!("unknown field `{field}`; fields: {}", fields.join(", ")));
        }
        let op = op.to_ascii_lowercase();
        if !OPS.contains(&op.as_str()) {
            return Err(format!("unknown operator `{op}`; operators: {}", OPS.join(", ")));
        }
        let value = value.strip_prefix('\'').unwrap_or(value).to_owned();
        conds.push(Cond { field: field.clone(), op, value });
        i += 3;
    }
    Ok(conds)
}

fn holds(row: &Value, c: &Cond) -> bool {
    let v = at(row, &c.field);
    let as_text = v.map(text).unwrap_or_default();
    let ord = match v {
        Some(Value::Number(n)) => match c.value.parse::<f64>() {
            Ok(x) => n.as_f64().unwrap_or(0.0).partial_cmp(&x).unwrap_or(Ordering::Equal),
            Err(_) => as_text.cmp(&c.value),
        },
        _ => text_cmp(&c.field, &as_text, &c.value),
    };
    match c.op.as_str() {
        "eq" => ord.is_eq(),
        "ne" => !ord.is_eq(),
        "lt" => ord.is_lt(),
        "le" => ord.is_le(),
        "gt" => ord.is_gt(),
        "ge" => ord.is_ge(),
        "startswith" => as_text.starts_with(&c.value),
        "contains" => as_text.contains(&c.value),
        _ => false,
    }
}

/// Sorts rows by `(field, descending)` keys; rows equal on every key keep their order.
fn sort(rows: &mut [Value], keys: &[(String, bool)]) {
    rows.sort_by(|a, b| {
        keys.iter()
            .map(|(f, desc)| {
                let o = compare(f, at(a, f), at(b, f));
                if *desc { o.reverse() } else { o }
            })
            .find(|o| !o.is_eq())
            .unwrap_or(Ordering::Equal)
    });
}

/// Applies PortSIP list parameters; returns `(count before paging, page)`. `fields` are the
/// names `filter` and `orderby` accept.
pub fn portsip<T: Serialize>(
    rows: &[T],
    q: &ListQuery,
    fields: &[&str],
) -> Result<(u64, Vec<Value>), Failure> {
    let top = q.top.unwrap_or(100);
    if !(1..=100).contains(&top) {
        return Err(Failure::bad("top", format!("1 to 100, not {top}")));
    }
    let mut rows: Vec<Value> = rows.iter().map(|r| serde_json::to_value(r).unwrap_or_default()).collect();
    if let Some(f) = q.filter.as_deref().filter(|f| !f.trim().is_empty()) {
        let conds = parse_filter(f, fields).map_err(|m| Failure::bad("filter", m))?;
        rows.retain(|r| conds.iter().all(|c| holds(r, c)));
    }
    if let Some(s) = q.search.as_deref().filter(|s| !s.is_empty()) {
        let needle = s.to_lowercase();
        rows.retain(|r| {
            fields.iter().any(|f| at(r, f).is_some_and(|v| text(v).to_lowercase().contains(&needle)))
        });
    }
    if let Some(o) = q.orderby.as_deref().filter(|o| !o.trim().is_empty()) {
        let mut keys = Vec::new();
        for part in o.split(',') {
            let mut words = part.split_whitespace();
            let field = words.next().unwrap_or_default();
            if !fields.contains(&field) {
                return Err(Failure::bad(
                    "orderby",
                    format!("unknown field `{field}`; fields: {}", fields.join(", ")),
                ));
            }
            let desc = match words.next().map(str::to_ascii_lowercase).as_deref() {
                None | Some("asc") => false,
                Some("desc") => true,
                Some(w) => return Err(Failure::bad("orderby", format!("`{w}`: asc or desc"))),
            };
            if let Some(extra) = words.next() {
                return Err(Failure::bad("orderby", format!("unexpected `{extra}`")));
            }
            keys.push((field.to_owned(), desc));
        }
        sort(&mut rows, &keys);
    }
    let count = rows.len() as u64;
    let page = rows.into_iter().skip(q.skip.unwrap_or(0) as usize).take(top as usize).collect();
    Ok((count, page))
}

/// Nested objects as dotted keys.
pub fn flatten(v: &Value) -> Value {
    fn walk(prefix: &str, v: &Value, out: &mut Map<String, Value>) {
        match v {
            Value::Object(m) => {
                for (k, v) in m {
                    let key = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
                    walk(&key, v, out);
                }
            }
            v => {
                out.insert(prefix.to_owned(), v.clone());
            }
        }
    }
    let mut out = Map::new();
    walk("", v, &mut out);
    Value::Object(out)
}

/// Keeps only the (dotted) fields of `mask` in `v`.
pub fn mask(v: &Value, fields: &[String]) -> Value {
    let mut out = Value::Object(Map::new());
    for f in fields {
        let Some(val) = at(v, f) else { continue };
        let mut cur = &mut out;
        let parts: Vec<&str> = f.split('.').collect();
        for (i, p) in parts.iter().enumerate() {
            let Value::Object(m) = cur else { break };
            if i + 1 == parts.len() {
                m.insert((*p).to_owned(), val.clone());
                break;
            }
            cur = m.entry((*p).to_owned()).or_insert_with(|| Value::Object(Map::new()));
        }
    }
    out
}

/// Parses a `mask` against the entity's (dotted) field names.
pub fn parse_mask(m: Option<&str>, fields: &[&str]) -> Result<Option<Vec<String>>, Failure> {
    let Some(m) = m.map(str::trim).filter(|m| !m.is_empty()) else { return Ok(None) };
    let mut out = Vec::new();
    for f in m.split(',').map(str::trim).filter(|f| !f.is_empty()) {
        let known = fields.iter().any(|k| *k == f || k.starts_with(&format!("{f}.")));
        if !known {
            return Err(Failure::bad("mask", format!("unknown field `{f}`; fields: {}", fields.join(", "))));
        }
        out.push(f.to_owned());
    }
    Ok(Some(out))
}

/// Shapes one entity for output: `mask`, then `flat`.
pub fn shape(v: Value, mask_fields: Option<&[String]>, flat: bool) -> Value {
    let v = match mask_fields {
        Some(m) => mask(&v, m),
        None => v,
    };
    if flat { flatten(&v) } else { v }
}

/// Applies border-rule list parameters. `fields` are the entity's dotted field names.
pub fn border<T: Serialize>(rows: &[T], q: &BorderQuery, fields: &[&str]) -> Result<Vec<Value>, Failure> {
    let mut rows: Vec<Value> = rows.iter().map(|r| serde_json::to_value(r).unwrap_or_default()).collect();
    if let Some(f) = q.filter.as_deref().filter(|f| !f.trim().is_empty()) {
        let want: Map<String, Value> =
            serde_json::from_str(f).map_err(|e| Failure::bad("filter", format!("not a JSON object: {e}")))?;
        let want = match flatten(&Value::Object(want)) {
            Value::Object(m) => m,
            _ => Map::new(),
        };
        for k in want.keys() {
            if !fields.contains(&k.as_str()) {
                return Err(Failure::bad(
                    "filter",
                    format!("unknown field `{k}`; fields: {}", fields.join(", ")),
                ));
            }
        }
        rows.retain(|r| want.iter().all(|(k, v)| at(r, k).is_some_and(|x| x == v || text(x) == text(v))));
    }
    if let Some(o) = q.order.as_deref().filter(|o| !o.trim().is_empty()) {
        let items: Vec<Value> = match serde_json::from_str::<Value>(o) {
            Ok(Value::Array(a)) => a,
            Ok(v @ (Value::String(_) | Value::Object(_))) => vec![v],
            _ => o.split(',').map(|s| Value::String(s.trim().to_owned())).collect(),
        };
        let mut keys = Vec::new();
        for it in items {
            let (field, desc) = match it {
                Value::String(s) => match s.strip_prefix('-') {
                    Some(f) => (f.to_owned(), true),
                    None => (s.strip_prefix('+').unwrap_or(&s).to_owned(), false),
                },
                Value::Object(m) if m.len() == 1 => {
                    let (f, d) = m.into_iter().next().unwrap_or_default();
                    let desc = match text(&d).to_ascii_lowercase().as_str() {
                        "asc" => false,
                        "desc" => true,
                        other => return Err(Failure::bad("order", format!("`{other}`: asc or desc"))),
                    };
                    (f, desc)
                }
                other => {
                    return Err(Failure::bad(
                        "order",
                        format!("`{other}` is not a field or {{field: asc|desc}}"),
                    ));
                }
            };
            if !fields.contains(&field.as_str()) {
                return Err(Failure::bad(
                    "order",
                    format!("unknown field `{field}`; fields: {}", fields.join(", ")),
                ));
            }
            keys.push((field, desc));
        }
        sort(&mut rows, &keys);
    }
    if let Some(l) = q.limit
        && !(1..=10_000).contains(&l)
    {
        return Err(Failure::bad("limit", format!("1 to 10000, not {l}")));
    }
    let mask_fields = parse_mask(q.mask.as_deref(), fields)?;
    Ok(rows
        .into_iter()
        .skip(q.offset.unwrap_or(0) as usize)
        .take(q.limit.unwrap_or(u32::MAX) as usize)
        .map(|r| shape(r, mask_fields.as_deref(), q.flat.unwrap_or(false)))
        .collect())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn rows() -> Vec<Value> {
        vec![
            json!({"id": "1", "number_prefix": "+900", "description": "Premium"}),
            json!({"id": "2", "number_prefix": "0049", "description": "it's fine"}),
            json!({"id": "3", "number_prefix": "+901", "description": "premium too"}),
        ]
    }

    const F: &[&str] = &["id", "number_prefix", "description"];

    fn ids(page: &[Value]) -> Vec<&str> {
        page.iter().map(|v| v["id"].as_str().unwrap()).collect()
    }

    #[test]
    fn portsip_filter_search_order_and_paging() {
        let q = |filter: &str, search: &str, orderby: &str, skip, top| ListQuery {
            filter: Some(filter.into()),
            search: Some(search.into()),
            orderby: Some(orderby.into()),
            skip,
            top,
        };
        let (n, p) =
            portsip(&rows(), &q("number_prefix startswith '+90'", "", "id desc", None, None), F).unwrap();
        assert_eq!((n, ids(&p)), (2, vec!["3", "1"]));
        let (n, p) = portsip(&rows(), &q("", "PREMIUM", "", None, None), F).unwrap();
        assert_eq!((n, ids(&p)), (2, vec!["1", "3"]));
        let (n, p) = portsip(&rows(), &q("description eq 'it''s fine'", "", "", None, None), F).unwrap();
        assert_eq!((n, ids(&p)), (1, vec!["2"]));
        // Text order: `+900` < `+901` < `0049`; skip one, take one.
        let (n, p) = portsip(&rows(), &q("", "", "number_prefix", Some(1), Some(1)), F).unwrap();
        assert_eq!((n, ids(&p)), (3, vec!["3"]));
        // Ids are strings of digits, ordered and compared by their number: 2 before 10.
        let many: Vec<Value> = [10, 2, 1, 33, 9]
            .iter()
            .map(|i| json!({"id": i.to_string(), "number_prefix": "+1", "description": ""}))
            .collect();
        let (_, p) = portsip(&many, &q("", "", "id", None, None), F).unwrap();
        assert_eq!(ids(&p), ["1", "2", "9", "10", "33"]);
        let (_, p) = portsip(&many, &q("id gt 9", "", "id desc", None, None), F).unwrap();
        assert_eq!(ids(&p), ["33", "10"]);
        for (bad, field) in [
            (q("nope eq 1", "", "", None, None), "filter"),
            (q("id xx 1", "", "", None, None), "filter"),
            (q("id eq", "", "", None, None), "filter"),
            (q("id eq 1 or id eq 2", "", "", None, None), "filter"),
            (q("", "", "id sideways", None, None), "orderby"),
            (q("", "", "", None, Some(101)), "top"),
            (q("", "", "", None, Some(0)), "top"),
        ] {
            let e = portsip(&rows(), &bad, F).unwrap_err();
            assert_eq!(e.body().field.as_deref(), Some(field), "{bad:?}: {:?}", e.body());
        }
    }

    #[test]
    fn border_filter_mask_order_and_flat() {
        let rows = vec![
            json!({"id": "a", "priority": 92, "action": "deny", "opts": {"title": "x", "comment": ""}}),
            json!({"id": "b", "priority": 91, "action": "allow", "opts": {"title": "", "comment": ""}}),
            json!({"id": "c", "priority": 93, "action": "deny", "opts": {"title": "", "comment": ""}}),
        ];
        let f = &["id", "priority", "action", "opts.title", "opts.comment"];
        let q = |filter: &str, mask: &str, order: &str, flat| BorderQuery {
            filter: Some(filter.into()),
            mask: Some(mask.into()),
            order: Some(order.into()),
            flat: Some(flat),
            ..Default::default()
        };
        let out =
            border(&rows, &q(r#"{"action":"deny"}"#, "id,opts.title", r#"[{"priority":"desc"}]"#, false), f)
                .unwrap();
        assert_eq!(
            out,
            vec![json!({"id": "c", "opts": {"title": ""}}), json!({"id": "a", "opts": {"title": "x"}})]
        );
        let out = border(&rows, &q(r#"{"opts":{"title":"x"}}"#, "", "", true), f).unwrap();
        assert_eq!(out[0]["opts.title"], "x");
        let out = border(&rows, &q("", "id", "-priority", false), f).unwrap();
        assert_eq!(out, vec![json!({"id": "c"}), json!({"id": "a"}), json!({"id": "b"})]);
        let out =
            border(&rows, &BorderQuery { offset: Some(1), limit: Some(1), ..Default::default() }, f).unwrap();
        assert_eq!(out[0]["id"], "b");
        for (bad, field) in [
            (q("[1]", "", "", false), "filter"),
            (q(r#"{"nope":1}"#, "", "", false), "filter"),
            (q("", "nope", "", false), "mask"),
            (q("", "", "nope", false), "order"),
            (q("", "", r#"[{"id":"up"}]"#, false), "order"),
        ] {
            let e = border(&rows, &bad, f).unwrap_err();
            assert_eq!(e.body().field.as_deref(), Some(field), "{bad:?}");
        }
    }
}
