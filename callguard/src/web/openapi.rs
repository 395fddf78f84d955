//! The OpenAPI 3.1 document of the whole API, generated from the handlers' annotations as the
//! routes are registered ([`super::api_routes`]), and served at `/api/openapi.json` (no token
//! needed).

use axum::{Json, Router, routing::get};
use utoipa::{
    Modify, OpenApi,
    openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme},
};

use crate::web::Shared;

/// Adds the bearer scheme the handlers refer to.
#[derive(Debug)]
struct Bearer;

impl Modify for Bearer {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The document's title, description and security scheme; the paths come from the routes.
#[derive(Debug, OpenApi)]
#[openapi(
    info(
        title = "callguard management API",
        description = "The seed documents' operations (PortSIP security and authentication, authorization codes, \
                       border rules, Voximplant authorized IPs) and callguard's accounts, on one rule model. \
                       `LOOKUP /rest/v1/master/borderrules` (a custom method OpenAPI 3.1 cannot describe) answers \
                       200 `[id]` or 404 `{\"error_code\":1404,\"error_message\":\"Lookup failed\"}`."
    ),
    modifiers(&Bearer),
)]
pub struct Doc;

/// The route serving `doc`, the document of every other route ([`super::api_routes`]).
pub fn routes(doc: utoipa::openapi::OpenApi) -> Router<Shared> {
    let doc = std::sync::Arc::new(doc);
    Router::new().route("/api/openapi.json", get(move || async move { Json(doc.as_ref().clone()) }))
}

/// The README's route table: one row per operation of `doc` (method, path, the first sentence
/// of its description), in the document's order. A test keeps the README's copy equal to it.
pub fn route_table(doc: &utoipa::openapi::OpenApi) -> String {
    let mut out = String::from("| method | path | what it does |\n|---|---|---|\n");
    for (path, item) in &doc.paths.paths {
        let ops = [
            ("GET", &item.get),
            ("POST", &item.post),
            ("PUT", &item.put),
            ("PATCH", &item.patch),
            ("DELETE", &item.delete),
        ];
        for (method, op) in ops {
            let Some(op) = op else { continue };
            // The summary's first sentence, on one line.
            let summary = op.summary.as_deref().unwrap_or_default().replace('\n', " ");
            let first = summary.split(". ").next().unwrap_or_default();
            let what = first.trim_end_matches('.').replace('|', "\\|");
            out.push_str(&format!("| {method} | `{path}` | {what} |\n"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    /// The README's route table is the one the OpenAPI document makes: every route the daemon
    /// serves is listed, and nothing else.
    #[test]
    fn the_readme_lists_every_route_and_only_those() {
        let table = super::route_table(&super::super::openapi_document());
        let readme =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md")).expect("README.md");
        let (begin, end) = ("<!-- routes: generated from the OpenAPI document -->", "<!-- routes: end -->");
        let start = readme.find(begin).expect("the README's route table begin marker") + begin.len();
        let stop = readme[start..].find(end).expect("the README's route table end marker") + start;
        assert!(
            readme[start..stop].trim() == table.trim(),
            "README.md's route table differs from the routes served; put this between its markers:\n{table}"
        );
    }
}
