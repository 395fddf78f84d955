//! Fuzzes the list parameters of the management API as a query string reaches them (axum reads
//! it with serde_urlencoded): PortSIP's `filter`, `search`, `orderby`, `skip`, `top`, and the
//! border rules' `filter`, `mask`, `order`, `offset`, `limit`, `flat`. Any query is answered or
//! refused, never a panic; a page never holds more than asked.
#![no_main]

use callguard::{
    api::{border::BorderQuery, query::ListQuery},
    web::query,
};
use libfuzzer_sys::fuzz_target;
use serde_json::json;

fuzz_target!(|data: &[u8]| {
    let rows = [
        json!({"id": 1, "number_prefix": "+90", "description": "premium", "opts": {"title": "a"}}),
        json!({"id": 10, "number_prefix": "+882", "description": "satellite", "opts": {"title": "b"}}),
        json!({"id": 2, "number_prefix": "00", "description": "it's", "opts": {"title": null}}),
    ];
    let fields = ["id", "number_prefix", "description", "opts.title"];
    if let Ok(q) = serde_urlencoded::from_bytes::<ListQuery>(data) {
        if let Ok((count, page)) = query::portsip(&rows, &q, &fields) {
            assert!(count as usize <= rows.len() && page.len() <= q.top.unwrap_or(100) as usize);
        }
    }
    if let Ok(q) = serde_urlencoded::from_bytes::<BorderQuery>(data) {
        let _ = query::border(&rows, &q, &fields);
    }
});
