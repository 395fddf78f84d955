//! The management API of the seed documents, end to end, requests as the seeds show them. Each
//! documented example is a test here; where a seed's example cannot be sent as printed, the test
//! says why.
//!
//! Tests of the API alone run against [`LocalApi`]: the rule service over an in-memory store and
//! a fake kernel, served in this process (no root, no namespace). Tests that need what only the
//! real daemon has (its kernel maps, the control socket and the CLI, a kill -9, TLS from the
//! configuration file) run a real daemon in its own namespace ([`ApiServer`]).

use callguard_tests::http::{ApiServer, Http, LocalApi, expect};
use serde_json::{Value, json};

fn admin(h: &Http) -> Http {
    h.sign_in("admin", ApiServer::ADMIN_PASSWORD, "").0
}

#[test]
fn portsip_security_seed() {
    let server = LocalApi::start("");
    server.run(|h| {
        let a = admin(&h);
        // Allowed country codes: replace, then list.
        expect(a.post("/api/allowed_country_codes", &json!({"items": ["44", "+49", "1"]})), 200);
        let got = expect(a.get("/api/allowed_country_codes"), 200).json();
        assert_eq!(got, json!({"items": ["44", "+49", "1"]}), "each code as it was written");
        // `49` and `+49` are the same country code.
        expect(a.post("/api/allowed_country_codes", &json!({"items": ["49", "+49"]})), 400);

        // Disallowed codes: create → 201 {id}; list with count; show; update; export; destroy.
        let mut ids = Vec::new();
        for (p, d) in [("+900", "premium"), ("0049", "germany"), ("+901", "premium too")] {
            let r = expect(a.post("/api/disallowed_codes", &json!({"number_prefix": p, "description": d})), 201);
            ids.push(r.json()["id"].as_str().expect("id").to_owned());
        }
        let list = expect(a.get("/api/disallowed_codes"), 200).json();
        assert_eq!(list["count"], 3);
        let f = expect(
            a.get("/api/disallowed_codes?filter=number_prefix%20startswith%20'%2B90'&orderby=number_prefix%20desc&top=1"),
            200,
        )
        .json();
        assert_eq!(f["count"], 2, "count is before paging");
        assert_eq!(f["items"], json!([{"id": ids[2], "number_prefix": "+901", "description": "premium too"}]));
        let s = expect(a.get("/api/disallowed_codes?search=GERMANY&skip=0"), 200).json();
        assert_eq!(s["items"][0]["number_prefix"], "0049");
        let one = expect(a.get(&format!("/api/disallowed_codes/{}", ids[0])), 200).json();
        assert_eq!(one, json!({"id": ids[0], "number_prefix": "+900", "description": "premium"}));
        let up = a.post(&format!("/api/disallowed_codes/{}", ids[0]), &json!({"description": "changed"}));
        assert_eq!(expect(up, 200).json()["description"], "changed");
        let other = a.post(&format!("/api/disallowed_codes/{}", ids[0]), &json!({"id": ids[1]}));
        assert_eq!(expect(other, 400).field().as_deref(), Some("id"), "the id is immutable");
        let csv = expect(a.get("/api/disallowed_codes/export"), 200);
        assert_eq!(csv.header("content-disposition"), Some("attachment; filename=\"disallowed_codes.csv\""));
        assert_eq!(csv.header("content-type"), Some("application/octet-stream"));
        assert_eq!(
            csv.text,
            "number_prefix,description\n+900,changed\n0049,germany\n+901,premium too\n"
        );
        expect(a.post(&format!("/api/disallowed_codes/{}/destroy", ids[1]), &json!({})), 204);
        expect(a.post(&format!("/api/disallowed_codes/{}/destroy", ids[1]), &json!({})), 404);
        let bad = expect(a.post("/api/disallowed_codes/x1/destroy", &json!({})), 400);
        assert!(bad.text.contains("Invalid entry ID supplied"), "{}", bad.text);

        // Blacklisted numbers, with expire_at and the timestamps.
        let r = a.post(
            "/api/blacklisted_numbers",
            &json!({"number": "+4930123456", "expire_at": "2099-07-21T17:32:28Z", "description": "spam"}),
        );
        let id = expect(r, 201).json()["id"].as_str().unwrap().to_owned();
        let n = expect(a.get(&format!("/api/blacklisted_numbers/{id}")), 200).json();
        assert_eq!(n["number"], "+4930123456");
        assert_eq!(n["expire_at"], "2099-07-21T17:32:28Z");
        assert!(n["created_at"].as_str().unwrap().ends_with('Z') && n["updated_at"].is_string(), "{n}");
        let up = expect(a.post(&format!("/api/blacklisted_numbers/{id}"), &json!({"expire_at": null})), 200).json();
        assert!(up["expire_at"].is_null(), "null removes the expiry: {up}");
        expect(a.post("/api/blacklisted_numbers", &json!({"number": "+4930123456"})), 409);
        let list = expect(a.get("/api/blacklisted_numbers?filter=number%20eq%20'%2B4930123456'"), 200).json();
        assert_eq!(list["count"], 1);
        let csv = expect(a.get("/api/blacklisted_numbers/export"), 200);
        assert_eq!(csv.header("content-disposition"), Some("attachment; filename=\"blacklisted_numbers.csv\""));
        assert!(csv.text.starts_with("number,expire_at,description,created_at,updated_at\n+4930123456,,spam,"));
        expect(a.post(&format!("/api/blacklisted_numbers/{id}/destroy"), &json!({})), 204);
        assert_eq!(expect(a.get("/api/blacklisted_numbers"), 200).json()["count"], 0);

        // `orderby=id` orders by the id's number (ids are strings of digits): 9 before 10.
        for i in 0..11 {
            expect(a.post("/api/blacklisted_numbers", &json!({"number": format!("+4930999{i:02}")})), 201);
        }
        let ids = |q: &str| -> Vec<u64> {
            let list = expect(a.get(&format!("/api/blacklisted_numbers?{q}")), 200).json();
            list["items"].as_array().unwrap().iter().map(|n| n["id"].as_str().unwrap().parse().unwrap()).collect()
        };
        let up = ids("orderby=id");
        assert!(up.windows(2).all(|w| w[0] < w[1]) && up.len() == 11, "{up:?}");
        let down = ids("orderby=id%20desc&top=3");
        assert_eq!(down, up.iter().rev().take(3).copied().collect::<Vec<_>>());
        assert!(up.last().unwrap() >= &10, "ids past 9 are in the list: {up:?}");
    });
}

#[test]
fn authorization_code_seed() {
    // The seed's examples are two-digit codes; callguard's default minimum is four.
    let strict = LocalApi::start("");
    strict.run(|h| {
        let a = admin(&h);
        expect(
            a.post("/api/v1/tenants", &json!({"id": "footenant", "name": "Foo", "domain": "foo.example"})),
            201,
        );
        expect(a.post("/api/v1/tenants/footenant/groups", &json!({"id": "foogroup"})), 201);
        let u = json!({"tenant": "footenant", "group": "foogroup", "username": "foouser",
                       "password": "foouser-pass", "role": "StandardUser"});
        expect(a.post("/api/v1/users", &u), 201);
        let base =
            "/api/v1/tenants/footenant/groups/foogroup/users/foouser/services/outgoing_call_barring/codes/";
        let short = expect(a.post(base, &json!({"code": "01"})), 400);
        assert_eq!(short.field().as_deref(), Some("code"));
        assert!(short.text.contains("4 to 16 digits (calls.authcode_min_digits)"), "{}", short.text);
        expect(a.post(base, &json!({"code": "0147"})), 201);
    });
    let server = LocalApi::start("[calls]\nauthcode_min_digits = 2\n");
    server.run(|h| {
        let a = admin(&h);
        expect(a.post("/api/v1/tenants", &json!({"id": "footenant", "name": "Foo", "domain": "foo.example"})), 201);
        expect(a.post("/api/v1/tenants/footenant/groups", &json!({"id": "foogroup"})), 201);
        let u = json!({"tenant": "footenant", "group": "foogroup", "username": "foouser",
                       "password": "foouser-pass", "role": "StandardUser"});
        expect(a.post("/api/v1/users", &u), 201);
        let base = "/api/v1/tenants/footenant/groups/foogroup/users/foouser/services/outgoing_call_barring/codes/";
        // The codes of the list example, then the list example's answer.
        for c in [json!({"code": "01", "description": "test_code_01"}), json!({"code": "02", "description": "test_code_02"})] {
            assert_eq!(expect(a.post(base, &c), 201).json(), json!({}));
        }
        let list = expect(a.get(base), 200).json();
        assert_eq!(
            list,
            json!({"authCodes": [{"code": "01", "description": "test_code_01"}, {"code": "02", "description": "test_code_02"}]})
        );
        // Create many (the example), create one (the example: 03 exists now, so 409).
        let many = json!({"authCodes": [{"code": "03", "description": "test_code_03"}, {"code": "04", "description": "test_code_04"}]});
        assert_eq!(expect(a.post(base, &many), 201).json(), json!({}));
        expect(a.post(base, &json!({"code": "03", "description": "test_code_03"})), 409);
        // Get one.
        let one = expect(a.get(&format!("{base}01/")), 200).json();
        assert_eq!(one, json!({"code": "01", "description": "test_code_01"}));
        expect(a.get(&format!("{base}fooCode/")), 404);
        // The end user reads its own codes but may not write them (minimum Group Admin).
        let (me, _) = h.sign_in("foouser", "foouser-pass", "foo.example");
        assert_eq!(expect(me.get(base), 200).json()["authCodes"].as_array().unwrap().len(), 4);
        expect(me.post(base, &json!({"code": "99"})), 403);
        // Delete many (01 and 02; absent ones are no error), delete one (absent: no error).
        let del = json!({"authCodes": [{"code": "01"}, {"code": "02"}, {"code": "77"}]});
        assert_eq!(expect(a.call("DELETE", base, Some(&del)), 200).json(), json!({}));
        assert_eq!(expect(a.call("DELETE", &format!("{base}fooCode/"), None), 200).json(), json!({}));
        assert_eq!(expect(a.call("DELETE", &format!("{base}03/"), None), 200).json(), json!({}));
        let left = expect(a.get(base), 200).json();
        assert_eq!(left, json!({"authCodes": [{"code": "04", "description": "test_code_04"}]}));
        // Unknown tenant, group or user: 404 naming which.
        let miss = a.get("/api/v1/tenants/footenant/groups/nogroup/users/foouser/services/outgoing_call_barring/codes/");
        assert_eq!(expect(miss, 404).field().as_deref(), Some("group"));
    });
}

/// The seed's five listed rules (its third has `"friendly-scanner.\"`, which is not valid
/// JSON; it is sent as `friendly-scanner.`).
fn seed_rules() -> Vec<Value> {
    let r = |id: &str, p: u32, site: &str, domain: &str, user: &str, ua: &str, mask: &str, action: &str| {
        json!({"id": id, "enabled": 1, "priority": p, "site": site, "service": "sip", "domain": domain,
               "username": user, "useragent": ua, "remoteipmask": mask, "action": action, "opts": {"title": ""}})
    };
    vec![
        r(
            "9a7a73b7-016c-cd10-9ca9-50e54938780c",
            91,
            "",
            "docs[.]rootdomain[.]ru",
            "",
            "",
            "0.0.0.0/0",
            "allow",
        ),
        r("592aac52-016c-cd11-5ca7-50e54938780c", 92, "", "", "abcde", "", "0.0.0.0/0", "deny"),
        r("50b2cff8-016d-1bb6-0054-02004c4f4f50", 93, "", "", "", "friendly-scanner.", "0.0.0.0/0", "drop"),
        r("9f2605a4-016d-1bb7-d504-02004c4f4f50", 94, "SITE1", "", "", "", "212.53.40.40/4", "allow"),
        r(
            "0a2cce0d-016d-1bb7-f46b-02004c4f4f50",
            95,
            "SITE2",
            "^.test.$",
            "test[A-Z]*",
            "...endly-scann..",
            "192.168.0.0/24",
            "drop",
        ),
    ]
}

#[test]
fn border_rule_seed() {
    let server = LocalApi::start("");
    server.run(|h| {
        let a = admin(&h);
        const P: &str = "/rest/v1/master/borderrules";
        // Create: the first example (site "*", opts with comment) answers the entity.
        let first = json!({"id": "9a7a73b7-016c-cd10-9ca9-50e54938780c", "enabled": 1, "priority": 91, "site": "*",
            "service": "sip", "domain": "docs[.]rootdomain[.]ru", "username": "", "useragent": "",
            "remoteipmask": "0.0.0.0/0", "action": "allow", "opts": {"title": "", "comment": ""}});
        let made = expect(a.post(P, &first), 200).json();
        for (k, v) in first.as_object().unwrap() {
            assert_eq!(&made[k], v, "{k}");
        }
        let (ct, lwt) = (made["ext"]["ct"].as_str().unwrap().to_owned(), made["ext"]["lwt"].as_str().unwrap());
        assert_eq!(ct, lwt);
        assert!(ct.len() == 23 && ct.ends_with('Z'), "the seed's time form 2019-08-26T08:35:13.70Z: {ct}");
        expect(a.call("DELETE", &format!("{P}/9a7a73b7-016c-cd10-9ca9-50e54938780c"), None), 204);
        // The list example: five rules, offset=0&limit=5.
        for r in seed_rules() {
            expect(a.post(P, &r), 200);
        }
        let list = expect(a.get(&format!("{P}?offset=0&limit=5")), 200).json();
        let list = list.as_array().unwrap();
        assert_eq!(list.len(), 5);
        for (got, want) in list.iter().zip(seed_rules()) {
            for (k, v) in want.as_object().unwrap() {
                assert_eq!(&got[k], v, "{k} of {}", want["id"]);
            }
        }
        // filter, mask, order, flat.
        let drops = expect(a.get(&format!("{P}?filter=%7B%22action%22%3A%22drop%22%7D&mask=id,priority&order=-priority")), 200);
        assert_eq!(
            drops.json(),
            json!([{"id": "0a2cce0d-016d-1bb7-f46b-02004c4f4f50", "priority": 95}, {"id": "50b2cff8-016d-1bb6-0054-02004c4f4f50", "priority": 93}])
        );
        let flat = expect(a.get(&format!("{P}?mask=id,opts.title&flat=true&limit=1")), 200).json();
        assert_eq!(flat, json!([{"id": "9a7a73b7-016c-cd10-9ca9-50e54938780c", "opts.title": ""}]));
        // Get one, with mask.
        let id = "9a7a73b7-016c-cd10-9ca9-50e54938780c";
        let one = expect(a.get(&format!("{P}/{id}?mask=domain")), 200).json();
        assert_eq!(one, json!({"domain": "docs[.]rootdomain[.]ru"}));
        // PATCH (the example: the useragent changes, lwt moves, ct stays); the id is immutable.
        std::thread::sleep(std::time::Duration::from_millis(20));
        let before = expect(a.get(&format!("{P}/{id}")), 200).json();
        let patched = expect(a.call("PATCH", &format!("{P}/{id}"), Some(&json!({"site": "", "useragent": "friendly-scanner."}))), 200).json();
        assert_eq!(patched["useragent"], "friendly-scanner.");
        assert_eq!(patched["ext"]["ct"], before["ext"]["ct"]);
        assert_ne!(patched["ext"]["lwt"], before["ext"]["ct"]);
        let moved = a.call("PATCH", &format!("{P}/{id}"), Some(&json!({"id": "other"})));
        let moved = expect(moved, 400).json();
        assert_eq!((moved["error_code"].as_u64(), moved["field"].as_str()), (Some(1400), Some("id")));
        // LOOKUP: found, and the seed's unsuccessful answer exactly.
        let found = expect(a.raw("LOOKUP", P, Some(&format!("\"{id}\""))), 200).json();
        assert_eq!(found, json!([id]));
        let missing = expect(a.raw("LOOKUP", P, Some("\"9a7a73b7-0000-0000-0000-000000000000\"")), 404);
        assert_eq!(missing.json(), json!({"error_code": 1404, "error_message": "Lookup failed"}));
        // DELETE → 204, then 404 in this seed's error shape.
        expect(a.call("DELETE", &format!("{P}/{id}"), None), 204);
        let gone = expect(a.call("DELETE", &format!("{P}/{id}"), None), 404).json();
        assert_eq!(gone["error_code"], 1404);
        // Patterns are compiled and size-limited on write.
        let bomb = expect(a.post(P, &json!({"useragent": "(a{100}){100}"})), 400).json();
        assert_eq!(bomb["field"], "useragent");
        let broken = expect(a.post(P, &json!({"domain": "("})), 400).json();
        assert_eq!(broken["field"], "domain");
    });
}

#[test]
fn voximplant_authorized_ip_seed() {
    let server = LocalApi::start("");
    server.run(|h| {
        let a = admin(&h);
        let key = expect(a.post("/api/v1/api_keys", &json!({"comment": "vox panel"})), 201).json();
        let auth = format!("account_id={}&api_key={}", key["account_id"], key["api_key"].as_str().unwrap());
        let v = |call: &str, args: &str| h.get(&format!("/platform_api/{call}/?{auth}&{args}"));
        // Add the example network to the white list.
        assert_eq!(
            expect(v("AddAuthorizedAccountIP", "authorized_ip=92.255.220.0%2F24"), 200).json(),
            json!({"result": 1})
        );
        // Check: "the IP isn't allowed" (no rule matches).
        assert_eq!(
            expect(v("CheckAuthorizedAccountIP", "authorized_ip=10.1.2.3"), 200).json(),
            json!({"result": false})
        );
        // Delete the example network from all lists.
        assert_eq!(
            expect(v("DelAuthorizedAccountIP", "authorized_ip=92.255.220.0%2F24"), 200).json(),
            json!({"result": 1})
        );
        // Check the example: allowed through 92.255.0.0/16, then forbidden by it.
        expect(v("AddAuthorizedAccountIP", "authorized_ip=92.255.0.0%2F16"), 200);
        let ok = expect(v("CheckAuthorizedAccountIP", "authorized_ip=92.255.220.0%2F24"), 200).json();
        assert_eq!(ok, json!({"result": true, "authorized_ip": "92.255.0.0/16"}));
        expect(v("DelAuthorizedAccountIP", "authorized_ip=all"), 200);
        expect(v("AddAuthorizedAccountIP", "authorized_ip=92.255.0.0%2F16&allowed=false"), 200);
        let no = expect(v("CheckAuthorizedAccountIP", "authorized_ip=92.255.220.0%2F24"), 200).json();
        assert_eq!(no, json!({"result": false, "authorized_ip": "92.255.0.0/16"}));
        expect(v("DelAuthorizedAccountIP", "authorized_ip=all"), 200);
        // Get the example's two items.
        expect(v("AddAuthorizedAccountIP", "authorized_ip=92.255.220.0%2F24"), 200);
        expect(v("AddAuthorizedAccountIP", "authorized_ip=92.255.220.10&allowed=false"), 200);
        let all = expect(v("GetAuthorizedAccountIPs", ""), 200).json();
        assert_eq!((all["count"].as_u64(), all["total_count"].as_u64()), (Some(2), Some(2)));
        let items: Vec<(String, String)> = all["result"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| (i["allowed"].as_str().unwrap().into(), i["authorized_ip"].as_str().unwrap().into()))
            .collect();
        assert_eq!(
            items,
            [("true".into(), "92.255.220.0/24".into()), ("false".into(), "92.255.220.10".into())]
        );
        let created = all["result"][0]["created"].as_str().unwrap();
        assert_eq!(created.len(), 19, "`2015-02-01 20:10:15` form: {created}");
        let page = expect(v("GetAuthorizedAccountIPs", "count=1&offset=1&allowed=false"), 200).json();
        assert_eq!((page["count"].as_u64(), page["total_count"].as_u64()), (Some(0), Some(1)));
        let contains = expect(v("GetAuthorizedAccountIPs", "contains_ip=92.255.220.10"), 200).json();
        assert_eq!(contains["total_count"], 2);
        // The same rules are callguard's network rules.
        let nets = expect(a.get("/v1/nets"), 200).json();
        assert_eq!(nets.as_array().unwrap().len(), 2);
        // Removing by containment, from one list only.
        assert_eq!(
            expect(v("DelAuthorizedAccountIP", "contains_ip=92.255.220.10&allowed=false"), 200).json(),
            json!({"result": 1})
        );
        // A wrong key: 401 in Voximplant's error shape.
        let bad = h.get("/platform_api/GetAuthorizedAccountIPs/?account_id=1&api_key=00");
        assert_eq!(expect(bad, 401).json()["error"]["code"], 401);
        let bad_ip = expect(v("AddAuthorizedAccountIP", "authorized_ip=92.255.220.1%2F24"), 400);
        assert_eq!(bad_ip.field().as_deref(), Some("authorized_ip"));
    });
}

#[test]
fn authentication_seed_tokens_and_password_reset() {
    let dir = tempfile::tempdir().unwrap();
    let hook = dir.path().join("hook.sh");
    let out = dir.path().join("token");
    std::fs::write(
        &hook,
        format!("#!/bin/sh\necho \"$CALLGUARD_RESET_USER $CALLGUARD_RESET_TOKEN\" > {}\n", out.display()),
    )
    .unwrap();
    std::process::Command::new("chmod").args(["+x", hook.to_str().unwrap()]).status().unwrap();
    let server = LocalApi::start(&format!(
        "reset_hook = \"{}\"\nsignin_failures = 3\ncallback_origins = [\"https://panel\"]\n\
         [api.info]\nweb_domain = \"pbx.example\"\nprimary_dns = \"192.0.2.53\"\n",
        hook.display()
    ));
    server.run(move |h| {
        let a = admin(&h);
        // /api/info, with and without a tenant's domain.
        let info = expect(h.get("/api/info"), 200).json();
        assert_eq!(info["web_domain"], "pbx.example");
        // PortSIP's names and the seed's default.
        assert_eq!((info["primary_dns_server"].as_str(), info["secondary_dns_server"].as_str()), (Some("192.0.2.53"), Some("")));
        assert_eq!(info["enable_ipv6"], true);
        expect(a.post("/api/v1/tenants", &json!({"id": "acme", "name": "Acme", "domain": "sip.acme.example"})), 201);
        let t = expect(h.get("/api/info?domain=sip.acme.example"), 200).json();
        // The tenant's fields beside the system's, as PortSIP answers.
        assert_eq!((t["name"].as_str(), t["domain"].as_str(), t["web_domain"].as_str()), (Some("Acme"), Some("sip.acme.example"), Some("pbx.example")));
        assert_eq!((t["avatar_url"].as_str(), t["enable_ms365_integration"].as_bool()), (Some(""), Some(false)));
        expect(h.get("/api/info?domain=nope.example"), 404);

        // The tenant's avatar: uploaded, named by /api/info, downloaded by anyone as what it is.
        let png = [b"\x89PNG\r\n\x1a\n".as_slice(), &[0u8; 64]].concat();
        let up = expect(a.upload("PUT", "/api/v1/tenants/acme/avatar", "image/png", &png), 200).json();
        let url = up["avatar_url"].as_str().unwrap().to_owned();
        assert!(url.starts_with("/api/blobs/") && url.len() == "/api/blobs/".len() + 22, "{url}");
        assert_eq!(expect(h.get("/api/info?domain=sip.acme.example"), 200).json()["avatar_url"], url.as_str());
        let img = expect(h.get(&url), 200);
        assert_eq!((img.header("content-type"), img.header("x-content-type-options")), (Some("image/png"), Some("nosniff")));
        assert_eq!(img.bytes, png);
        // What is not an image, or not the image it claims to be, or too large, is refused.
        let svg = b"<svg xmlns='http://www.w3.org/2000/svg'><script>alert(1)</script></svg>";
        let jpeg = [b"\xff\xd8\xff\xe0".as_slice(), &[0u8; 300_000]].concat();
        for (ct, body, says) in [
            ("image/svg+xml", svg.as_slice(), "not a PNG, JPEG, GIF or WebP"),
            ("image/jpeg", png.as_slice(), "the body is image/png, not image/jpeg"),
            ("image/jpeg", jpeg.as_slice(), "at most 262144"),
            ("image/png", b"".as_slice(), "empty"),
        ] {
            let r = expect(a.upload("PUT", "/api/v1/tenants/acme/avatar", ct, body), 400);
            assert!(r.text.contains(says), "{ct}: {}", r.text);
        }
        expect(a.upload("PUT", "/api/v1/tenants/nope/avatar", "image/png", &png), 404);
        expect(h.upload("PUT", "/api/v1/tenants/acme/avatar", "image/png", &png), 401);
        // A new upload replaces the old, whose path then names nothing.
        let gif = [b"GIF89a".as_slice(), &[0u8; 16]].concat();
        let next = expect(a.upload("PUT", "/api/v1/tenants/acme/avatar", "image/gif", &gif), 200).json();
        let next_url = next["avatar_url"].as_str().unwrap().to_owned();
        assert_ne!(next_url, url);
        expect(h.get(&url), 404);
        assert_eq!(expect(h.get(&next_url), 200).header("content-type"), Some("image/gif"));
        expect(a.call("DELETE", "/api/v1/tenants/acme/avatar", None), 204);
        expect(h.get(&next_url), 404);
        assert_eq!(expect(a.get("/api/v1/tenants/acme"), 200).json()["avatar_url"], "");
        for bad in ["/api/blobs/nope", "/api/blobs/..%2F..%2Fetc%2Fpasswd", "/api/blobs/AAAAAAAAAAAAAAAAAAAAAA"] {
            expect(h.get(bad), 404);
        }
        // A deleted tenant's avatar goes with it.
        expect(a.post("/api/v1/tenants", &json!({"id": "gone", "name": "Gone", "domain": "sip.gone.example"})), 201);
        let up = expect(a.upload("PUT", "/api/v1/tenants/gone/avatar", "image/png", &png), 200).json();
        expect(a.call("DELETE", "/api/v1/tenants/gone", None), 204);
        expect(h.get(up["avatar_url"].as_str().unwrap()), 404);
        expect(a.post("/api/v1/tenants/acme/groups", &json!({"id": "sales"})), 201);
        let u = json!({"tenant": "acme", "group": "sales", "username": "o'neil.j", "password": "first-password", "role": "StandardUser"});
        expect(a.post("/api/v1/users", &u), 201);
        // The seed's user-name rules.
        for (name, why) in [(".x", "start"), ("x y", "not allowed"), ("Admin", "reserved"), ("root", "reserved")] {
            let bad = json!({"tenant": "acme", "group": "sales", "username": name, "role": "StandardUser"});
            let e = expect(a.post("/api/v1/users", &bad), 400);
            assert_eq!(e.field().as_deref(), Some("username"));
            assert!(e.text.contains(why), "{name}: {}", e.text);
        }
        // Sign in: the domain selects the tenant.
        let (me, tokens) = h.sign_in("O'Neil.J", "first-password", "sip.acme.example");
        assert_eq!(tokens["token_type"], "Bearer");
        assert_eq!(tokens["expires_in"], 1800);
        let info = expect(me.get("/api/auth/token"), 200).json();
        assert_eq!((info["user"].as_str(), info["role"].as_str()), (Some("o'neil.j"), Some("StandardUser")));
        assert!((1795..=1800).contains(&info["expires_in"].as_i64().unwrap()));
        assert_eq!(info["password_verified"], true);
        // Refresh: a new pair; the old access token stops working.
        let r = expect(h.post("/api/auth/refresh", &json!({"refresh_token": tokens["refresh_token"]})), 200).json();
        expect(me.get("/api/auth/token"), 401);
        let me = h.with_token(r["access_token"].as_str().unwrap());
        expect(me.get("/api/auth/token"), 200);
        // A spent refresh token used again (a stolen copy, or the thief's use first): which holder
        // is the thief cannot be told, so the session ends for both.
        let reused = expect(h.post("/api/auth/refresh", &json!({"refresh_token": tokens["refresh_token"]})), 401);
        assert!(reused.text.contains("used before"), "{}", reused.text);
        expect(me.get("/api/auth/token"), 401);
        expect(h.post("/api/auth/refresh", &json!({"refresh_token": r["refresh_token"]})), 401);
        // Sign out: both tokens stop working.
        let (me, r) = h.sign_in("o'neil.j", "first-password", "sip.acme.example");
        expect(me.post("/api/auth/sign_out", &json!({})), 204);
        let revoked = expect(me.get("/api/auth/token"), 401);
        assert!(revoked.text.contains("revoked"), "{}", revoked.text);
        expect(h.post("/api/auth/refresh", &json!({"refresh_token": r["refresh_token"]})), 401);
        // Forgot password: 204 for anyone; the hook gets a token for a real user.
        expect(h.post("/api/auth/forgot_password", &json!({"domain": "sip.acme.example", "username": "nobody"})), 204);
        // A callback outside api.callback_origins is refused (reset poisoning).
        for evil in ["https://evil.example/reset", "https://panel.evil.example/", "https://panel@evil.example/", "javascript:x"] {
            let e = expect(h.post("/api/auth/forgot_password", &json!({"domain": "sip.acme.example", "username": "o'neil.j", "callback": evil})), 400);
            assert_eq!(e.field().as_deref(), Some("callback"), "{evil}");
        }
        expect(h.post("/api/auth/forgot_password", &json!({"domain": "sip.acme.example", "username": "o'neil.j", "callback": "https://panel/reset"})), 204);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        // The file exists as soon as the hook opens it: wait for the whole line.
        let line = loop {
            if let Ok(l) = std::fs::read_to_string(&out)
                && l.ends_with('\n')
            {
                break l;
            }
            assert!(std::time::Instant::now() < deadline, "the reset hook did not run");
            std::thread::sleep(std::time::Duration::from_millis(50));
        };
        let (user, token) = line.trim().split_once(' ').unwrap();
        assert_eq!(user, "o'neil.j");
        expect(h.post("/api/auth/reset_password", &json!({"token": token, "password": "short"})), 400);
        expect(h.post("/api/auth/reset_password", &json!({"token": token, "password": "second-password"})), 204);
        expect(h.post("/api/auth/reset_password", &json!({"token": token, "password": "third-password"})), 400);
        h.sign_in("o'neil.j", "second-password", "sip.acme.example");
        // Throttling. The user has signed in from 127.0.0.1 (`h`). 3 failures for the user from
        // another address block the user (429 with Retry-After, also with the right password)
        // for every address it never signed in from, and that address itself…
        let bad = json!({"username": "o'neil.j", "password": "wrong-password", "domain": "sip.acme.example"});
        let good = json!({"username": "o'neil.j", "password": "second-password", "domain": "sip.acme.example"});
        let (attacker, newcomer) = ([127, 0, 0, 2].into(), [127, 0, 0, 3].into());
        // The seed's operation that takes the sign-in fields and answers 204: the credentials
        // checked without a session, counted as sign-ins are (the guesser below uses it).
        assert_eq!(expect(h.post("/api/auth/verify_password", &good), 204).text, "");
        for _ in 0..3 {
            expect(h.post_from(attacker, "/api/auth/verify_password", &bad), 401);
        }
        let blocked = expect(h.post_from(newcomer, "/api/auth/sign_in", &good), 429);
        assert!(blocked.header("retry-after").is_some(), "{:?}", blocked.headers);
        expect(h.post_from(attacker, "/api/auth/sign_in", &good), 429);
        expect(h.post_from(attacker, "/api/auth/verify_password", &good), 429);
        // …but not the address the user signs in from: the attacker cannot lock the user out.
        // (`qr`, PortSIP's sign-in from a QR code, is accepted and signs in the same way.)
        expect(h.post("/api/auth/sign_in?qr=true", &good), 200);
        expect(h.post("/api/auth/sign_in?qr=perhaps", &good), 400);
        // A known address has its own limit: 3 failures from it block it too.
        for _ in 0..3 {
            expect(h.post("/api/auth/sign_in", &bad), 401);
        }
        let blocked = expect(h.post("/api/auth/sign_in", &good), 429);
        assert!(blocked.header("retry-after").is_some());
    });
}

#[test]
fn expired_access_tokens_are_refused_and_refresh_works() {
    let server = LocalApi::start("access_token_secs = 1");
    server.run(|h| {
        let (a, tokens) = h.sign_in("admin", ApiServer::ADMIN_PASSWORD, "");
        expect(a.get("/api/v1/users"), 200);
        std::thread::sleep(std::time::Duration::from_millis(1500));
        let e = expect(a.get("/api/v1/users"), 401);
        assert!(e.text.contains("expired"), "{}", e.text);
        let r = expect(h.post("/api/auth/refresh", &json!({"refresh_token": tokens["refresh_token"]})), 200)
            .json();
        expect(h.with_token(r["access_token"].as_str().unwrap()).get("/api/v1/users"), 200);
    });
}

#[test]
fn bad_input_names_the_field_and_stores_nothing() {
    let server = LocalApi::start("");
    server.run(|h| {
        let a = admin(&h);
        let long = format!("{{\"number\": \"1\", \"description\": \"{}\"}}", "x".repeat(256));
        let cases: Vec<(&str, &str, &str, &str)> = vec![
            ("POST", "/api/disallowed_codes", "{\"number_prefix\": ", "body"),
            ("POST", "/api/disallowed_codes", "{\"number_prefix\": 5}", "number_prefix"),
            ("POST", "/api/disallowed_codes", "{\"number_prefix\": \"12345678901234567\"}", "number_prefix"),
            ("POST", "/api/disallowed_codes", "{\"number_prefix\": \"1 2\"}", "number_prefix"),
            ("POST", "/api/disallowed_codes", "{\"number_prefix\": \"1\", \"extra\": 1}", "extra"),
            // The server picks ids: a create that names one is refused, not silently renumbered.
            ("POST", "/api/disallowed_codes", "{\"number_prefix\": \"1\", \"id\": \"4\"}", "id"),
            ("POST", "/api/disallowed_codes", "{\"description\": \"no prefix\"}", "number_prefix"),
            (
                "POST",
                "/api/blacklisted_numbers",
                "{\"number\": \"1\", \"expire_at\": \"tomorrow\"}",
                "expire_at",
            ),
            (
                "POST",
                "/api/blacklisted_numbers",
                "{\"number\": \"1\", \"expire_at\": \"2001-01-01T00:00:00Z\"}",
                "expire_at",
            ),
            ("POST", "/api/blacklisted_numbers", &long, "description"),
            ("POST", "/api/blacklisted_numbers", "{}", "number"),
            ("GET", "/api/blacklisted_numbers?top=101", "", "top"),
            ("GET", "/api/blacklisted_numbers?skip=-1", "", "skip"),
            ("GET", "/api/disallowed_codes?orderby=nope", "", "orderby"),
            ("POST", "/api/allowed_country_codes", "{\"items\": [\"44\", \"4x\"]}", "items[1]"),
            ("POST", "/rest/v1/master/borderrules", "{\"remoteipmask\": \"300.0.0.0/8\"}", "remoteipmask"),
            ("POST", "/rest/v1/master/borderrules", "{\"action\": \"reject\"}", "action"),
            ("POST", "/rest/v1/master/borderrules", "{\"useragent\": \"[\"}", "useragent"),
            ("GET", "/rest/v1/master/borderrules?limit=0", "", "limit"),
            ("POST", "/v1/nets", "{\"rules\": [{\"cidr\": \"10.0.0.1/8\", \"action\": \"deny\"}]}", "cidr"),
            (
                "POST",
                "/api/v1/users",
                "{\"username\": \"x\", \"role\": \"NoSuchRole\", \"tenant\": null}",
                "role",
            ),
            ("DELETE", "/api/v1/api_keys/-1", "", "account_id"),
            ("GET", "/api/v1/users/x", "", "id"),
        ];
        let before = (
            a.get("/api/disallowed_codes").json()["count"].clone(),
            a.get("/api/blacklisted_numbers").json()["count"].clone(),
            a.get("/rest/v1/master/borderrules").json(),
            a.get("/api/allowed_country_codes").json(),
            a.get("/v1/nets").json(),
        );
        for (method, path, body, field) in cases {
            let r = a.raw(method, path, (!body.is_empty()).then_some(body));
            assert!((400..500).contains(&r.status), "{method} {path} {body}: {} {}", r.status, r.text);
            assert_eq!(r.field().as_deref(), Some(field), "{method} {path} {body}: {}", r.text);
        }
        let after = (
            a.get("/api/disallowed_codes").json()["count"].clone(),
            a.get("/api/blacklisted_numbers").json()["count"].clone(),
            a.get("/rest/v1/master/borderrules").json(),
            a.get("/api/allowed_country_codes").json(),
            a.get("/v1/nets").json(),
        );
        assert_eq!(before, after, "a refused request stores nothing");
    });
}

/// Every built-in role (and a second tenant's admin) against the API's routes: each either
/// succeeds or is refused with 403, exactly as the role's rights and reach say.
#[test]
fn permission_matrix() {
    let server = LocalApi::start("");
    server.run(|h| {
        let a = admin(&h);
        for (t, d) in [("t1", "t1.example"), ("t2", "t2.example")] {
            expect(a.post("/api/v1/tenants", &json!({"id": t, "name": t, "domain": d})), 201);
            for g in ["g1", "g2"] {
                expect(a.post(&format!("/api/v1/tenants/{t}/groups"), &json!({"id": g})), 201);
            }
        }
        // (label, user, role, tenant, group, domain)
        let people = [
            ("SystemAdmin", "ops", "SystemAdmin", None, None, ""),
            ("Replicator", "sync", "Replicator", None, None, ""),
            ("Dealer", "sales", "Dealer", None, None, ""),
            ("Admin@t1", "boss", "Admin", Some("t1"), None, "t1.example"),
            ("GroupAdmin@t1/g1", "lead", "GroupAdmin", Some("t1"), Some("g1"), "t1.example"),
            ("StandardUser@t1/g1 (owner)", "alice", "StandardUser", Some("t1"), Some("g1"), "t1.example"),
            ("StandardUser@t1/g2", "bob", "StandardUser", Some("t1"), Some("g2"), "t1.example"),
            ("QueueManager@t1/g1", "queue", "QueueManager", Some("t1"), Some("g1"), "t1.example"),
            ("Admin@t2 (wrong tenant)", "boss2", "Admin", Some("t2"), None, "t2.example"),
        ];
        let mut clients = Vec::new();
        let mut alice = 0;
        for (label, user, role, tenant, group, domain) in people {
            let u = json!({"username": user, "password": "password-123", "role": role, "tenant": tenant, "group": group});
            let made = expect(a.post("/api/v1/users", &u), 201).json();
            if user == "alice" {
                alice = made["id"].as_u64().unwrap();
            }
            clients.push((label, h.sign_in(user, "password-123", domain).0));
        }
        let codes = "/api/v1/tenants/t1/groups/g1/users/alice/services/outgoing_call_barring/codes/";
        let n = std::cell::Cell::new(0u32);
        let next = || {
            n.set(n.get() + 1);
            n.get()
        };
        type Route<'a> = (&'a str, Box<dyn Fn() -> (String, String, Option<Value>) + 'a>, &'a [&'a str]);
        const SECURITY_READERS: &[&str] = &["SystemAdmin", "Replicator", "Admin@t1", "Admin@t2 (wrong tenant)"];
        const ALICE_READERS: &[&str] =
            &["SystemAdmin", "Replicator", "Dealer", "Admin@t1", "GroupAdmin@t1/g1", "StandardUser@t1/g1 (owner)"];
        const TENANT_READERS: &[&str] = &["SystemAdmin", "Replicator", "Dealer", "Admin@t1", "Admin@t2 (wrong tenant)"];
        // The CLI's API concerns the whole host: system-level roles with security.read only.
        const SYSTEM_SECURITY_READERS: &[&str] = &["SystemAdmin", "Replicator"];
        let routes: Vec<Route<'_>> = vec![
            ("list blacklisted numbers", Box::new(|| ("GET".into(), "/api/blacklisted_numbers".into(), None)), SECURITY_READERS),
            (
                "create a blacklisted number",
                Box::new(|| ("POST".into(), "/api/blacklisted_numbers".into(), Some(json!({"number": format!("555{}", next())})))),
                &["SystemAdmin"],
            ),
            ("list border rules", Box::new(|| ("GET".into(), "/rest/v1/master/borderrules".into(), None)), SECURITY_READERS),
            (
                "create a border rule",
                Box::new(|| ("POST".into(), "/rest/v1/master/borderrules".into(), Some(json!({"username": "x"})))),
                &["SystemAdmin"],
            ),
            (
                "list authorized IPs (Voximplant)",
                Box::new(|| ("GET".into(), "/platform_api/GetAuthorizedAccountIPs/".into(), None)),
                SECURITY_READERS,
            ),
            ("list network rules (CLI API)", Box::new(|| ("GET".into(), "/v1/nets".into(), None)), SYSTEM_SECURITY_READERS),
            (
                "add a network rule (CLI API)",
                Box::new(|| {
                    let c = format!("198.51.100.{}/32", next() % 250);
                    ("POST".into(), "/v1/nets".into(), Some(json!({"rules": [{"cidr": c, "action": "deny"}]})))
                }),
                &["SystemAdmin"],
            ),
            ("read alice's authorization codes", Box::new(|| ("GET".into(), codes.into(), None)), ALICE_READERS),
            (
                "write alice's authorization codes",
                Box::new(|| ("POST".into(), codes.into(), Some(json!({"code": format!("{}", 1000 + next())})))),
                &["SystemAdmin", "Dealer", "Admin@t1", "GroupAdmin@t1/g1"],
            ),
            ("read alice", Box::new(move || ("GET".into(), format!("/api/v1/users/{alice}"), None)), ALICE_READERS),
            ("list tenants", Box::new(|| ("GET".into(), "/api/v1/tenants".into(), None)), TENANT_READERS),
            (
                "create a tenant",
                Box::new(|| {
                    let k = next();
                    ("POST".into(), "/api/v1/tenants".into(), Some(json!({"id": format!("n{k}"), "name": "n", "domain": format!("n{k}.example")})))
                }),
                &["SystemAdmin", "Dealer"],
            ),
            (
                "create a custom role",
                Box::new(|| {
                    ("POST".into(), "/api/v1/roles".into(), Some(json!({"name": format!("r{}", next()), "level": "user", "permissions": ["authcodes.read"]})))
                }),
                &["SystemAdmin"],
            ),
        ];
        let mut wrong = Vec::new();
        for (what, make, allowed) in &routes {
            for (label, c) in &clients {
                let (method, path, body) = make();
                let r = c.call(&method, &path, body.as_ref());
                let want_ok = allowed.contains(label);
                let ok = (200..300).contains(&r.status);
                // A refusal is 403; for a user beyond the caller's reach, 404, the answer a name
                // that does not exist gets (nothing is told of other tenants' users).
                let refused = r.status == 403 || (r.status == 404 && path.contains("/users/alice/"));
                if ok != want_ok || (!ok && !refused) {
                    wrong.push(format!("{what} as {label}: {} {}", r.status, r.text));
                }
            }
            // No token at all, a token that never existed: 401.
            let (method, path, body) = make();
            for c in [h.clone(), h.with_token("00000000000000000000000000000000")] {
                let r = c.call(&method, &path, body.as_ref());
                if r.status != 401 {
                    wrong.push(format!("{what} without a valid token: {} {}", r.status, r.text));
                }
            }
        }
        // A signed-out (revoked) token is refused everywhere.
        let (gone, _) = h.sign_in("ops", "password-123", "");
        expect(gone.post("/api/auth/sign_out", &json!({})), 204);
        for (what, make, _) in &routes {
            let (method, path, body) = make();
            let r = gone.call(&method, &path, body.as_ref());
            if r.status != 401 {
                wrong.push(format!("{what} with a revoked token: {} {}", r.status, r.text));
            }
        }
        assert!(wrong.is_empty(), "{} cells differ from the rights:\n{}", wrong.len(), wrong.join("\n"));
        println!("permission matrix: {} routes x {} callers, plus missing, unknown and revoked tokens", routes.len(), clients.len());
    });
}

/// Acknowledged writes survive `kill -9` in the middle of a burst from parallel writers.
#[test]
fn kill9_during_parallel_writes_loses_no_acknowledged_write() {
    let mut server = ApiServer::start("");
    let token = server.run(|h| {
        h.sign_in("admin", ApiServer::ADMIN_PASSWORD, "").1["access_token"].as_str().unwrap().to_owned()
    });
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let token = token.clone();
            let ns = server.ns.name.clone();
            std::thread::spawn(move || {
                callguard_tests::netns::enter(&ns);
                let c = Http::new("http://127.0.0.1:8887").with_token(&token);
                let mut acked = Vec::new();
                for i in 0..100_000u32 {
                    let number = format!("{w}{i:06}");
                    match c.try_raw(
                        "POST",
                        "/api/blacklisted_numbers",
                        Some(&json!({"number": number}).to_string()),
                    ) {
                        Ok(r) if r.status == 201 => acked.push(number),
                        Ok(r) => panic!("writer {w}: {} {}", r.status, r.text),
                        Err(_) => break, // the daemon is gone
                    }
                }
                acked
            })
        })
        .collect();
    std::thread::sleep(std::time::Duration::from_millis(1500));
    server.kill9();
    let acked: Vec<String> = writers.into_iter().flat_map(|w| w.join().unwrap()).collect();
    assert!(acked.len() > 20, "the burst was too short to mean anything: {}", acked.len());
    server.restart();
    let stored = server.run(|h| {
        let a = admin(&h);
        let mut all = Vec::new();
        loop {
            let page =
                expect(a.get(&format!("/api/blacklisted_numbers?skip={}&top=100", all.len())), 200).json();
            let items = page["items"].as_array().unwrap().clone();
            if items.is_empty() {
                break;
            }
            all.extend(items.into_iter().map(|i| i["number"].as_str().unwrap().to_owned()));
        }
        all
    });
    let stored: std::collections::HashSet<String> = stored.into_iter().collect();
    let lost: Vec<&String> = acked.iter().filter(|n| !stored.contains(*n)).collect();
    assert!(lost.is_empty(), "{} of {} acknowledged writes lost: {lost:?}", lost.len(), acked.len());
    println!(
        "kill -9: {} writes acknowledged by 4 parallel writers, all {} there after restart ({} stored)",
        acked.len(),
        acked.len(),
        stored.len()
    );
}

/// A network denied through the Voximplant call stops reaching the protected namespace at once,
/// and reaches it again when the call removes it.
/// A kernel map that cannot hold a change refuses it whole: 409 naming the map, nothing stored,
/// and the next change that fits goes through.
#[test]
fn a_full_kernel_map_is_a_409_and_stores_nothing() {
    use callguard::kernel::datapath::NetMap;
    let server = LocalApi::start("");
    server.kernel.state().capacities.insert(NetMap::V4Lpm, 2);
    server.run(|h| {
        let a = admin(&h);
        let rule = |cidr: &str| json!({"cidr": cidr, "action": "deny"});
        expect(a.post("/v1/nets", &json!({"rules": [rule("198.18.1.0/24"), rule("198.18.2.0/24")]})), 200);
        let full =
            expect(a.post("/v1/nets", &json!({"rules": [rule("198.18.3.0/24"), rule("198.18.4.1")]})), 409);
        assert_eq!(full.field().as_deref(), Some("rules"));
        assert!(full.text.contains("CG_NET4_LPM") && full.text.contains("at most 2"), "{}", full.text);
        let listed = expect(a.get("/v1/nets"), 200).json();
        assert_eq!(
            listed.as_array().map(Vec::len),
            Some(2),
            "nothing of the refused batch is stored: {listed}"
        );
        expect(a.post("/v1/nets", &json!({"rules": [rule("198.18.4.1")]})), 200);
    });
}

/// A password root sets on the control socket (`callguard users password`) is one the user must
/// replace at the next sign-in, as the command says; until then the user has no rights.
#[test]
fn a_password_set_by_root_must_be_changed_at_sign_in() {
    let server = ApiServer::start("");
    let id = server.run(|h| {
        let a = admin(&h);
        let u = json!({"username": "carol", "password": "carol-pass-1", "role": "SystemAdmin"});
        expect(a.post("/api/v1/users", &u), 201).json()["id"].as_u64().unwrap()
    });
    let out = server.inst.cli_input(&["users", "password", &id.to_string()], "carol-pass-2\n");
    assert!(out.contains("must choose a new one"), "{out}");
    server.run(move |h| {
        let (c, _) = h.sign_in("carol", "carol-pass-2", "");
        assert_eq!(expect(c.get("/api/auth/token"), 200).json()["force_reset"], true);
        let refused = expect(c.get("/api/blacklisted_numbers"), 403);
        assert!(refused.text.contains("set a new password first"), "{}", refused.text);
        let own = json!({"old_password": "carol-pass-2", "password": "carol-pass-3"});
        expect(c.post(&format!("/api/v1/users/{id}/password"), &own), 204);
        let (c, _) = h.sign_in("carol", "carol-pass-3", "");
        expect(c.get("/api/blacklisted_numbers"), 200);
    });
}

#[test]
fn api_changes_reach_the_kernel() {
    use std::net::{SocketAddr, UdpSocket};

    use callguard_tests::netns::{Instance, Topology};
    let t = Topology::new();
    let inst = Instance::new(
        &t.pbx,
        &t.pbx_if,
        &format!("[api]\nadmin_password = \"{}\"\n", ApiServer::ADMIN_PASSWORD),
    );
    let _daemon = inst.start();
    let pbx: SocketAddr = format!("{}:5060", Topology::PBX_V4).parse().unwrap();
    let listener = t.pbx.udp(pbx);
    listener.set_read_timeout(Some(std::time::Duration::from_millis(300))).unwrap();
    let src = Topology::SOURCES_V4[0];
    let sender = t.peer.udp(SocketAddr::new(src.parse().unwrap(), 0));
    let options = format!(
        "OPTIONS sip:100@{} SIP/2.0\r\nVia: SIP/2.0/UDP {src}\r\nFrom: <sip:a@{src}>;tag=1\r\nTo: <sip:100@{}>\r\nCall-ID: x\r\nCSeq: 1 OPTIONS\r\n\r\n",
        Topology::PBX_V4,
        Topology::PBX_V4
    );
    let arrives = |s: &UdpSocket, l: &UdpSocket| {
        s.send_to(options.as_bytes(), pbx).unwrap();
        let mut buf = [0u8; 2048];
        l.recv_from(&mut buf).is_ok()
    };
    assert!(arrives(&sender, &listener), "before any rule the request arrives");
    let call = |q: String| {
        t.pbx.run(move || {
            let h = Http::new("http://127.0.0.1:8887");
            let a = admin(&h);
            let key = expect(a.post("/api/v1/api_keys", &json!({})), 201).json();
            let r = h.get(&format!(
                "/platform_api/{q}&account_id={}&api_key={}",
                key["account_id"],
                key["api_key"].as_str().unwrap()
            ));
            expect(r, 200).json()
        })
    };
    let t0 = std::time::Instant::now();
    assert_eq!(
        call(format!("AddAuthorizedAccountIP/?authorized_ip={src}&allowed=false")),
        json!({"result": 1})
    );
    let answered = t0.elapsed();
    assert!(!arrives(&sender, &listener), "the first request after the answer is dropped");
    assert_eq!(call(format!("DelAuthorizedAccountIP/?authorized_ip={src}")), json!({"result": 1}));
    assert!(arrives(&sender, &listener), "after the delete it arrives again");
    let stats = inst.stats();
    assert_eq!(callguard_tests::netns::reason_packets(&stats, "drop", "denied"), 1);
    println!(
        "API → kernel: deny answered in {} ms (sign-in and key included); the next packet was dropped",
        answered.as_millis()
    );
}

/// `callguard api` reaches every resource over the control socket without a token (root is
/// system administrator there), and its exit status says whether the API accepted.
#[test]
fn cli_api_over_the_control_socket() {
    let server = ApiServer::start("");
    let out = server.inst.cli(&["api", "POST", "/api/blacklisted_numbers", r#"{"number": "+4930123456"}"#]);
    let id = serde_json::from_str::<Value>(&out).unwrap()["id"].as_str().unwrap().to_owned();
    let out = server.inst.cli(&["api", "GET", &format!("/api/blacklisted_numbers/{id}")]);
    assert_eq!(serde_json::from_str::<Value>(&out).unwrap()["number"], "+4930123456");
    let csv = server.inst.cli(&["api", "GET", "/api/blacklisted_numbers/export"]);
    assert!(csv.starts_with("number,expire_at,"), "{csv}");
    let bad = server.inst.cli_output(&["api", "POST", "/api/blacklisted_numbers", r#"{"number": "1 2"}"#]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stdout).contains("\"field\": \"number\""));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("answered 400"));
    let users = server.inst.cli(&["api", "GET", "/api/v1/users"]);
    assert!(users.contains("\"username\": \"admin\""), "{users}");
    // Completions and man pages come from the same CLI definition.
    let bash = server.inst.cli(&["completions", "bash"]);
    assert!(
        bash.contains("callguard__subcmd__api") && bash.contains("callguard__subcmd__net__subcmd__allow"),
        "bash completion names every command"
    );
    let dir = tempfile::tempdir().unwrap();
    let out = server.inst.cli(&["man", dir.path().to_str().unwrap()]);
    assert!(out.contains("man pages in"), "{out}");
    let page = std::fs::read_to_string(dir.path().join("callguard-api.1")).unwrap();
    assert!(page.contains("LOOKUP"), "the api page carries its examples");
}

/// The typed CLI: a command per resource of the seeds, tables for people and `--json` for
/// scripts, on the same rule model the HTTP API serves; bad input fails naming the field and
/// stores nothing.
#[test]
fn typed_cli_commands_manage_every_resource() {
    let server = ApiServer::start("");
    let cli = |args: &[&str]| server.inst.cli(args);
    let json = |args: &[&str]| -> Value {
        let out = server.inst.cli(&[args, &["--json"]].concat());
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{args:?} --json: {e}: {out}"))
    };
    let fails = |args: &[&str]| -> String {
        let out = server.inst.cli_output(args);
        assert!(!out.status.success(), "{args:?} should fail: {}", String::from_utf8_lossy(&out.stdout));
        String::from_utf8_lossy(&out.stderr).into_owned()
    };

    // Blacklisted numbers: add with an expiry, list as a table and as JSON, change, export, delete.
    assert!(
        cli(&["numbers", "add", "+4930123456", "--expires", "7d", "--description", "spam"])
            .starts_with("blacklisted +4930123456 (id ")
    );
    let id = json(&["numbers", "add", "+15551234567"])["id"].as_str().unwrap().to_owned();
    let table = cli(&["numbers", "list"]);
    assert!(table.contains("+4930123456") && table.contains("spam") && table.contains("never"), "{table}");
    assert!(table.ends_with("2 of 2 shown\n"), "{table}");
    let filtered = json(&["numbers", "list", "--filter", "number startswith '+49'"]);
    assert_eq!(filtered["count"], 1);
    assert!(filtered["items"][0]["expire_at"].is_string(), "{filtered}");
    let changed = json(&["numbers", "update", &id, "--description", "robocaller", "--expires", "1h"]);
    assert_eq!(changed["description"], "robocaller");
    assert!(changed["expire_at"].is_string());
    assert!(json(&["numbers", "update", &id, "--never"])["expire_at"].is_null());
    let csv = cli(&["numbers", "export"]);
    assert!(
        csv.starts_with("number,expire_at,description,") && csv.contains("+15551234567,,robocaller"),
        "{csv}"
    );
    let err = fails(&["numbers", "add", "1 2"]);
    assert!(err.contains("number:"), "the error names the field: {err}");
    let err = fails(&["numbers", "add", "+4930123456"]);
    assert!(err.contains("already"), "a duplicate is refused: {err}");
    assert_eq!(json(&["numbers", "list"])["count"], 2, "nothing stored by the failures");

    // Disallowed prefixes.
    let pid =
        json(&["prefixes", "add", "+882", "--description", "satellite"])["id"].as_str().unwrap().to_owned();
    assert!(cli(&["prefixes", "show", &pid]).contains("satellite"));
    assert_eq!(json(&["prefixes", "update", &pid, "--prefix", "+8816"])["number_prefix"], "+8816");
    assert_eq!(cli(&["prefixes", "export"]), "number_prefix,description\n+8816,satellite\n");
    assert!(fails(&["prefixes", "add", "+88 2"]).contains("number_prefix:"));

    // Allowed countries: add and remove keep the rest.
    assert_eq!(cli(&["countries", "add", "44", "+49", "1"]), "international calls may reach: +44 +49 +1\n");
    assert_eq!(json(&["countries", "del", "+44"]), json!({"items": ["+49", "1"]}));
    assert!(cli(&["countries", "set"]).contains("every country"));

    // Border rules, with the seed's LOOKUP.
    let rule = json(&[
        "border",
        "add",
        "--action",
        "deny",
        "--useragent",
        "(?i)sipvicious",
        "--priority",
        "10",
        "--title",
        "scanners",
    ]);
    let rid = rule["id"].as_str().unwrap().to_owned();
    assert!(cli(&["border", "list"]).contains("(?i)sipvicious"));
    assert!(cli(&["border", "lookup", &rid]).contains("exists"));
    fails(&["border", "lookup", "no-such-rule"]);
    let off = cli(&["border", "update", &rid, "--enabled", "false", "--comment", "paused"]);
    assert!(off.contains("enabled:   no") && off.contains("comment:   paused"), "{off}");
    assert!(off.contains("title:     scanners"), "--comment alone keeps the title: {off}");
    assert!(fails(&["border", "add", "--action", "deny", "--useragent", "(unclosed"]).contains("useragent"));
    assert!(fails(&["border", "update", &rid, "--remote", "10.0.0.0/33"]).contains("remoteipmask"));

    // Tenants, groups, users (a generated password shown once, one from stdin), codes, roles.
    assert!(cli(&["tenants", "add", "acme", "--domain", "sip.acme.test"]).contains("sip.acme.test"));
    assert!(cli(&["groups", "add", "-t", "acme", "sales"]).contains("sales"));
    let alice = cli(&["users", "add", "alice", "--role", "StandardUser", "-t", "acme", "-g", "sales"]);
    let alice_pw =
        alice.split("password (shown once): ").nth(1).expect("a generated password").trim().to_owned();
    let bob = server.inst.cli_input(
        &[
            "users",
            "add",
            "bob",
            "--role",
            "GroupAdmin",
            "-t",
            "acme",
            "-g",
            "sales",
            "--password-stdin",
            "--json",
        ],
        "bob-password-1\n",
    );
    let bob: Value = serde_json::from_str(&bob).unwrap();
    assert!(bob.get("password").is_none(), "no password is shown when one was given");
    let bob_id = bob["id"].to_string();
    let users = cli(&["users", "list", "-t", "acme"]);
    assert!(
        users.contains("alice") && users.contains("GroupAdmin") && users.ends_with("2 users\n"),
        "{users}"
    );
    let owner = ["-t", "acme", "-g", "sales", "-u", "alice"];
    cli(&[&["codes", "add"][..], &owner, &["4711:boss", "1234"]].concat());
    assert_eq!(
        json(&[&["codes", "list"][..], &owner].concat()),
        json!({"authCodes": [{"code": "1234", "description": ""}, {"code": "4711", "description": "boss"}]})
    );
    cli(&[&["codes", "del"][..], &owner, &["1234", "9999"]].concat());
    assert!(!cli(&[&["codes", "list"][..], &owner].concat()).contains("1234"));
    assert!(fails(&[&["codes", "add"][..], &owner, &["12a"]].concat()).contains("code"));
    let role =
        json(&["roles", "add", "Auditor", "--level", "tenant", "-p", "security.read", "-p", "users.read"]);
    assert_eq!(role["permissions"], json!(["security.read", "users.read"]));
    fails(&["roles", "add", "Admin", "--level", "tenant", "-p", "users.read"]);
    cli(&["users", "update", &bob_id, "--role", "Auditor"]);
    assert!(cli(&["users", "show", &bob_id]).contains("Auditor"));

    // Keys and tokens, seen from the HTTP side: the key works for the Voximplant calls; a revoked
    // session's token stops working.
    let key = json(&["keys", "add", "--user", "1", "--comment", "panel"]);
    let account = key["account_id"].to_string();
    let secret = key["api_key"].as_str().unwrap().to_owned();
    let (bob_token, alice_token) = server.run(move |h| {
        let q = format!("/platform_api/CheckAuthorizedAccountIP/?account_id={account}&api_key={secret}&authorized_ip=10.1.2.3");
        assert_eq!(expect(h.get(&q), 200).json(), json!({"result": false}));
        let (_, a) = h.sign_in("alice", &alice_pw, "sip.acme.test");
        let (_, b) = h.sign_in("bob", "bob-password-1", "sip.acme.test");
        (b["access_token"].as_str().unwrap().to_owned(), a["access_token"].as_str().unwrap().to_owned())
    });
    let sessions = json(&["tokens", "list", "--user", &bob_id]);
    let sid = sessions[0]["id"].to_string();
    assert!(cli(&["tokens", "list"]).contains("active"));
    cli(&["tokens", "revoke", &sid]);
    server.run(move |h| {
        expect(h.with_token(&bob_token).get("/api/auth/token"), 401);
        expect(h.with_token(&alice_token).get("/api/auth/token"), 200);
    });
    assert!(cli(&["tokens", "list", "--user", &bob_id]).contains("revoked"));

    // Deletions, and what the HTTP API then shows.
    let err = fails(&["numbers", "del", &id, "999"]);
    assert!(err.contains("999: not deleted (the ones before it are)"), "{err}");
    cli(&["prefixes", "del", &pid]);
    cli(&["border", "del", &rid]);
    cli(&["keys", "del", &key["account_id"].to_string()]);
    cli(&["users", "del", &bob_id]);
    assert_eq!(cli(&["keys", "list"]).lines().last(), Some("0 keys"));
    server.run(|h| {
        let a = admin(&h);
        assert_eq!(
            expect(a.get("/api/blacklisted_numbers"), 200).json()["count"],
            1,
            "the first was deleted"
        );
        assert_eq!(expect(a.get("/api/disallowed_codes"), 200).json()["count"], 0);
        assert_eq!(expect(a.get("/rest/v1/master/borderrules"), 200).json(), json!([]));
        assert_eq!(expect(a.get("/api/v1/users?tenant=acme"), 200).json().as_array().unwrap().len(), 1);
    });
}

/// HTTPS: with `api.tls_cert` and `api.tls_key` the API speaks TLS (rustls) on its address, a
/// client that trusts the certificate signs in and works, plain HTTP and a client that does not
/// trust it get nothing, and `config check` refuses a key that does not match the certificate.
#[test]
fn the_api_speaks_https_with_the_configured_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let made = |name: &str| {
        let c =
            rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned(), "localhost".to_owned()]).unwrap();
        let (cert, key) = (dir.path().join(format!("{name}.pem")), dir.path().join(format!("{name}.key")));
        std::fs::write(&cert, c.cert.pem()).unwrap();
        std::fs::write(&key, c.signing_key.serialize_pem()).unwrap();
        (cert, key, c.cert.der().to_vec())
    };
    let (cert, key, der) = made("api");
    let (other_cert, _, other_der) = made("other");
    let server =
        ApiServer::start(&format!("tls_cert = \"{}\"\ntls_key = \"{}\"\n", cert.display(), key.display()));
    let checked = server.inst.cli(&["config", "check"]);
    assert!(checked.contains("tls_cert"), "{checked}");

    server.ns.run(move || {
        let https = Http::new("https://127.0.0.1:8887").trusting(&der);
        let info = expect(https.get("/api/info"), 200).json();
        assert!(info.is_object(), "{info}");
        let (a, _) = https.sign_in("admin", ApiServer::ADMIN_PASSWORD, "");
        let r = expect(
            a.post("/api/disallowed_codes", &json!({"number_prefix": "+882", "description": "tls"})),
            201,
        );
        assert!(r.json()["id"].is_string());
        assert_eq!(expect(a.get("/api/disallowed_codes"), 200).json()["count"], 1);

        let plain = Http::new("http://127.0.0.1:8887").try_raw("GET", "/api/info", None);
        assert!(plain.is_err() || plain.as_ref().is_ok_and(|a| a.status == 400), "plain HTTP: {plain:?}");
        let untrusted =
            Http::new("https://127.0.0.1:8887").trusting(&other_der).try_raw("GET", "/api/info", None);
        let err = untrusted.expect_err("a client that does not trust the certificate gets no answer");
        assert!(err.to_lowercase().contains("certificate") || err.contains("UnknownIssuer"), "{err}");
    });

    // A key that is not the certificate's: `config check` says so and names the pair.
    let text = std::fs::read_to_string(&server.inst.config).unwrap();
    std::fs::write(
        &server.inst.config,
        text.replace(&cert.display().to_string(), &other_cert.display().to_string()),
    )
    .unwrap();
    let out = server.inst.cli_output(&["config", "check"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("do not make a usable pair"), "{err}");
}

/// The checks schemathesis applies to every answer. Left out: `positive_data_acceptance` and
/// `negative_data_rejection`, which expect the OpenAPI document to express every validation
/// rule; many of ours are not expressible in JSON Schema (an expiry in the future, a role that
/// exists, an id equal to the path's), so a schema-valid request may rightly answer 400.
const SCHEMATHESIS_CHECKS: &str = "not_a_server_error,status_code_conformance,content_type_conformance,\
    response_headers_conformance,response_schema_conformance,unsupported_method,use_after_free,\
    ensure_resource_availability,ignored_auth,missing_required_header";

/// Runs schemathesis (installed by scripts/bootstrap.sh) in `ns` against the daemon's OpenAPI
/// document with `token`, on the operations `filter` selects; returns its summary lines. The seed
/// is fixed, so that a run is the same on every machine and CI cannot fail on a case it never
/// generated before; `CALLGUARD_SCHEMATHESIS_SEED=N` replays another run and `=random` explores
/// (the seed used is printed, and named when a run fails).
fn schemathesis(ns: &str, token: &str, filter: &[&str]) -> String {
    const SEED: u32 = 3_261;
    let seed = match std::env::var("CALLGUARD_SCHEMATHESIS_SEED").as_deref() {
        Ok("random") => {
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
            now.subsec_nanos() ^ std::process::id()
        }
        Ok(n) => n.parse().expect("CALLGUARD_SCHEMATHESIS_SEED: a number or `random`"),
        Err(_) => SEED,
    };
    let bin = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../target/tools/schemathesis/bin/schemathesis");
    assert!(bin.exists(), "{} is missing: run scripts/bootstrap.sh", bin.display());
    // Its example database (.hypothesis) goes to a directory of its own, not the source tree.
    let cwd = tempfile::tempdir().unwrap();
    let out = std::process::Command::new("ip")
        .args(["netns", "exec", ns])
        .arg(&bin)
        .args(["run", "http://127.0.0.1:8887/api/openapi.json", "--checks", SCHEMATHESIS_CHECKS])
        .args([
            "--header",
            &format!("Authorization: Bearer {token}"),
            "--max-examples",
            "15",
            "--workers",
            "1",
            "--seed",
            &seed.to_string(),
        ])
        .args(filter)
        .env("NO_COLOR", "1")
        .current_dir(cwd.path())
        .output()
        .expect("running schemathesis");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "schemathesis found failures (replay: CALLGUARD_SCHEMATHESIS_SEED={seed}):\n{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary = text.split("SUMMARY").nth(1).unwrap_or(&text).to_owned();
    println!("schemathesis {filter:?} (seed {seed}):{summary}");
    summary
}

/// Schemathesis generates requests from `/api/openapi.json` (valid and invalid ones, and stateful
/// sequences that create, read and delete) and checks every answer: no 5xx, every status, content
/// type, header and body as the document says. Operations that end the caller's own session
/// (sign-out, password changes, revoking sessions, deleting or changing users) run last, each
/// group with a token of its own, so that the rest is tested signed in.
#[test]
fn schemathesis_finds_no_server_error_and_no_answer_outside_the_schema() {
    let server = ApiServer::start("");
    for name in ["fuzz_main", "fuzz_signout", "fuzz_users"] {
        server.inst.cli_input(
            &["users", "add", name, "--role", "SystemAdmin", "--password-stdin"],
            "fuzz-password-1\n",
        );
    }
    let tokens: Vec<String> = server.run(|h| {
        ["fuzz_main", "fuzz_signout", "fuzz_users"]
            .iter()
            .map(|u| h.sign_in(u, "fuzz-password-1", "").1["access_token"].as_str().unwrap().to_owned())
            .collect()
    });
    let ns = server.ns.name.clone();
    // `GET /v1/events?follow=true` streams until the daemon stops: schemathesis would wait on it
    // forever (the events tests read it instead).
    let own_session = "sign_out|/password$|/sessions/|/users/\\{id\\}$|^/v1/events$";
    let main = schemathesis(&ns, &tokens[0], &["--exclude-path-regex", own_session]);
    assert!(!main.contains("Authentication failed"), "the main run stays signed in:{main}");
    // 66 operations of the seeds and accounts (social sign-in among them), 21 of the control API.
    assert!(main.contains("Tested: 87"), "every other operation is tested:{main}");
    schemathesis(&ns, &tokens[1], &["--include-path-regex", "sign_out"]);
    let users =
        schemathesis(&ns, &tokens[2], &["--include-path-regex", "/password$|/sessions/|/users/\\{id\\}$"]);
    assert!(users.contains("Tested: 5"), "{users}");
    let log = server.daemon.as_ref().unwrap().log();
    assert!(!log.contains("panicked"), "the daemon survived the fuzzing:\n{log}");
}
