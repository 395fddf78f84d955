//! The OpenAPI 3.1 document of the whole API, generated from the handlers' annotations and
//! served at `/api/openapi.json` (no token needed).

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

/// The document.
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
    paths(
        super::auth::info, super::auth::sign_in, super::auth::refresh, super::auth::token_info,
        super::auth::sign_out, super::auth::forgot_password, super::auth::reset_password,
        super::admin::list_tenants, super::admin::create_tenant, super::admin::show_tenant, super::admin::delete_tenant,
        super::admin::list_groups, super::admin::create_group, super::admin::delete_group,
        super::admin::list_users, super::admin::create_user, super::admin::show_user, super::admin::update_user,
        super::admin::delete_user, super::admin::set_password,
        super::admin::list_roles, super::admin::show_role, super::admin::create_role, super::admin::delete_role,
        super::admin::list_sessions, super::admin::revoke_session,
        super::admin::list_keys, super::admin::create_key, super::admin::delete_key,
        super::portsip::list_countries, super::portsip::set_countries,
        super::portsip::list_codes, super::portsip::create_code, super::portsip::show_code,
        super::portsip::update_code, super::portsip::destroy_code, super::portsip::export_codes,
        super::portsip::list_numbers, super::portsip::create_number, super::portsip::show_number,
        super::portsip::update_number, super::portsip::destroy_number, super::portsip::export_numbers,
        super::codes::list, super::codes::create, super::codes::show, super::codes::delete_many, super::codes::delete_one,
        super::border::create, super::border::list, super::border::show, super::border::update, super::border::remove,
        super::vox::add, super::vox::check, super::vox::del, super::vox::list,
    )
)]
pub struct Doc;

/// The route.
pub fn routes() -> Router<Shared> {
    Router::new().route("/api/openapi.json", get(|| async { Json(Doc::openapi()) }))
}
