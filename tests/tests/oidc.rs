//! Social sign-in over OpenID Connect, end to end, as a panel and a browser do it, against a real
//! OpenID provider run here (oidc-provider-mock from PyPI: discovery, published keys, the
//! authorization code flow, RS256 ID tokens; `tests/oidc/idp.py` adds an endpoint that spoils
//! the next ID token the way an attacker or a misconfigured provider would). The API runs in
//! this process ([`LocalApi`]); the provider on a loopback port. Every step the browser takes is
//! a request here: the provider's sign-in form is answered by posting the subject to its
//! authorization URL, and each redirect is read from `Location` and followed by hand.

use std::{
    io::{BufRead, BufReader},
    path::Path,
    process::{Child, Command, Stdio},
};

use callguard_tests::http::{ApiServer, Http, LocalApi, expect};
use serde_json::{Value, json};

/// The provider, stopped on drop.
struct Idp {
    child: Child,
    base: String,
}

impl Idp {
    fn start() -> Self {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
        let python = dir.join("../target/tools/oidc-provider-mock/bin/python");
        assert!(python.exists(), "{} is missing: run scripts/bootstrap.sh", python.display());
        let mut child = Command::new(python)
            .arg(dir.join("oidc/idp.py"))
            .arg("0")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting the OpenID provider");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut line).expect("its port");
        let port =
            line.trim().strip_prefix("listening ").unwrap_or_else(|| panic!("the provider said {line:?}"));
        Self { child, base: format!("http://127.0.0.1:{port}") }
    }

    fn http(&self) -> Http {
        Http::new(&self.base)
    }

    /// Gives subject `sub` these claims.
    fn user(&self, sub: &str, claims: &Value) {
        expect(self.http().call("PUT", &format!("/users/{sub}"), Some(claims)), 204);
    }

    /// Spoils the next ID token: `forged`, `wrong_aud`, `expired`, `wrong_iss`, `no_nonce`,
    /// `wrong_nonce`, `hs256`.
    fn spoil_next(&self, mode: &str) {
        expect(self.http().post("/test/next-id-token", &json!({ "mode": mode })), 204);
    }
}

impl Drop for Idp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const PUBLIC_URL: &str = "https://pbx.example.com:8887";
const PANEL: &str = "https://panel.example.com/sso-done";

/// The query pairs of a URL (or of its fragment).
fn pairs(s: &str) -> Vec<(String, String)> {
    serde_urlencoded::from_str(s).expect("url-encoded pairs")
}

fn pair<'a>(p: &'a [(String, String)], k: &str) -> Option<&'a str> {
    p.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str())
}

/// What the browser carries back from the provider: the callback's path and query on the API.
fn at_provider(idp: &Idp, url: &str, sub: &str) -> String {
    let path = url.strip_prefix(&idp.base).unwrap_or_else(|| panic!("{url} is not the provider's"));
    let q = pairs(path.split_once('?').expect("a query").1);
    // What a relying party must send: state, nonce, a PKCE challenge (S256), the redirect URI.
    assert_eq!(pair(&q, "code_challenge_method"), Some("S256"), "{url}");
    assert!(pair(&q, "code_challenge").is_some_and(|c| c.len() >= 43), "{url}");
    assert!(pair(&q, "state").is_some_and(|c| c.len() >= 16), "{url}");
    assert!(pair(&q, "nonce").is_some_and(|c| c.len() >= 16), "{url}");
    assert_eq!(pair(&q, "client_id"), Some("callguard"));
    assert_eq!(pair(&q, "redirect_uri"), Some(&*format!("{PUBLIC_URL}/api/auth/social_sign_in/callback")));
    let a =
        idp.http().upload("POST", path, "application/x-www-form-urlencoded", format!("sub={sub}").as_bytes());
    let back = expect(a, 302).header("location").expect("Location").to_owned();
    back.strip_prefix(PUBLIC_URL).unwrap_or_else(|| panic!("{back}: not to api.public_url")).to_owned()
}

/// The callback's answer: the fragment's pairs delivered to `panel`.
fn back_at_panel(h: &Http, callback: &str, panel: &str) -> Vec<(String, String)> {
    let a = expect(h.get(callback), 302);
    assert_eq!(a.header("cache-control"), Some("no-store"));
    assert_eq!(a.header("referrer-policy"), Some("no-referrer"));
    let to = a.header("location").expect("Location");
    let (page, fragment) = to.split_once('#').unwrap_or_else(|| panic!("{to}: no fragment"));
    assert_eq!(page, panel);
    pairs(fragment)
}

/// A whole sign-in of `sub` started by `POST /api/auth/social_sign_in`, with the panel's state.
fn sign_in(h: &Http, idp: &Idp, sub: &str) -> Vec<(String, String)> {
    let start = json!({"provider": "oidc", "domain": "acme.example", "callback": PANEL, "state": "panel-7"});
    let go = expect(h.post("/api/auth/social_sign_in", &start), 200);
    let url = go.json()["url"].as_str().expect("url").to_owned();
    let got = back_at_panel(h, &at_provider(idp, &url, sub), PANEL);
    assert_eq!(pair(&got, "state"), Some("panel-7"), "the panel's state comes back: {got:?}");
    got
}

/// The panel redeems the code of a finished sign-in: the token pair.
fn redeem(h: &Http, got: &[(String, String)]) -> Value {
    let code = pair(got, "code").unwrap_or_else(|| panic!("no code: {got:?}"));
    assert!(pair(got, "access_token").is_none(), "the browser carries no token");
    expect(h.post("/api/auth/social_sign_in/token", &json!({ "code": code })), 200).json()
}

/// The error delivered to the panel, or a panic naming the tokens that came instead.
fn refused(got: &[(String, String)]) -> String {
    assert_eq!(pair(got, "error"), Some("access_denied"), "{got:?}");
    assert!(pair(got, "code").is_none());
    pair(got, "error_description").unwrap_or_default().to_owned()
}

#[test]
fn social_sign_in_through_an_openid_provider() {
    let idp = Idp::start();
    let server = LocalApi::start(&format!(
        "public_url = \"{PUBLIC_URL}\"\ncallback_origins = [\"https://panel.example.com\"]\nsignin_failures = 5\n"
    ));
    server.run(|h| {
        let a = h.sign_in("admin", ApiServer::ADMIN_PASSWORD, "").0;
        expect(a.post("/api/v1/tenants", &json!({"id": "acme", "name": "Acme", "domain": "acme.example"})), 201);
        expect(a.post("/api/v1/tenants/acme/groups", &json!({"id": "staff"})), 201);
        for name in ["alice", "bob"] {
            let u = json!({"tenant": "acme", "group": "staff", "username": name,
                           "password": "a-long-password-1", "role": "StandardUser"});
            expect(a.post("/api/v1/users", &u), 201);
        }
        let info = expect(h.get("/api/info?domain=acme.example"), 200).json();
        assert_eq!(info["enable_ms365_integration"], false);
        assert_eq!(info["social_sign_in"], "");
        let start = json!({"provider": "oidc", "domain": "acme.example", "callback": PANEL, "state": "panel-1"});
        expect(h.post("/api/auth/social_sign_in", &start), 404);

        // The tenant's provider: refused while wrong, the secret never shown.
        let sso = |issuer: &str, callback: &str| {
            json!({"provider": "oidc", "issuer": issuer, "client_id": "callguard",
                   "client_secret": "s3cret", "allowed_domains": ["Acme.example"], "callback": callback})
        };
        let bad = expect(a.call("PUT", "/api/v1/tenants/acme/sso", Some(&sso("http://idp.example.com", PANEL))), 400);
        assert_eq!(bad.field().as_deref(), Some("issuer"), "plain http off this host");
        let bad =
            expect(a.call("PUT", "/api/v1/tenants/acme/sso", Some(&sso(&idp.base, "https://evil.example/x"))), 400);
        assert_eq!(bad.field().as_deref(), Some("callback"), "tokens only to api.callback_origins");
        let view = expect(a.call("PUT", "/api/v1/tenants/acme/sso", Some(&sso(&idp.base, PANEL))), 200).json();
        assert_eq!(view["client_secret_set"], true);
        assert!(view.get("client_secret").is_none(), "{view}");
        assert_eq!(view["allowed_domains"], json!(["acme.example"]));
        assert_eq!(view["redirect_uri"], format!("{PUBLIC_URL}/api/auth/social_sign_in/callback"));
        let shown = expect(a.get("/api/v1/tenants/acme/sso"), 200).text;
        assert!(!shown.contains("s3cret"), "{shown}");
        let info = expect(h.get("/api/info?domain=acme.example"), 200).json();
        assert_eq!(info["social_sign_in"], "oidc");
        assert_eq!(info["enable_ms365_integration"], false, "not Microsoft");

        // Alice signs in and gets a session of her own, as after a password sign-in. The walk
        // is printed (`-- --nocapture`) as a panel and a browser see it.
        idp.user("alice-sub", &json!({"email": "alice@acme.example", "email_verified": true}));
        let go = expect(h.post("/api/auth/social_sign_in", &start), 200).json();
        println!("POST /api/auth/social_sign_in {start}\n  -> 200 {go}");
        let url = go["url"].as_str().unwrap();
        let callback = at_provider(&idp, url, "alice-sub");
        println!("the browser at the provider signs in as alice-sub\n  -> 302 {PUBLIC_URL}{callback}");
        let shown = expect(h.get(&callback), 302).header("location").unwrap().to_owned();
        println!("GET {callback}\n  -> 302 {shown}");
        let got = pairs(shown.split_once('#').unwrap().1);
        assert_eq!(pair(&got, "state"), Some("panel-1"), "the panel's state comes back");
        let code = json!({"code": pair(&got, "code").expect("a code")});
        let tokens = expect(h.post("/api/auth/social_sign_in/token", &code), 200).json();
        println!("POST /api/auth/social_sign_in/token {code}\n  -> 200 {tokens}");
        assert_eq!(tokens["token_type"], "Bearer");
        assert_eq!(tokens["expires_in"], 1800);
        let me = expect(h.with_token(tokens["access_token"].as_str().unwrap()).get("/api/auth/token"), 200).json();
        assert_eq!((me["user"].as_str(), me["tenant"].as_str()), (Some("alice"), Some("acme")), "{me}");
        assert_eq!(me["password_verified"], false, "no password of callguard's was checked");
        expect(h.post("/api/auth/refresh", &json!({"refresh_token": tokens["refresh_token"]})), 200);
        // The code is spent: a copy that escaped the panel's page (a redirect, a script) is worth
        // nothing.
        let again = expect(h.post("/api/auth/social_sign_in/token", &code), 400);
        assert_eq!(again.field().as_deref(), Some("code"));

        // The provider's redirect replayed (a stolen or reloaded URL): the state is spent.
        let go = expect(h.post("/api/auth/social_sign_in", &start), 200).json();
        let callback = at_provider(&idp, go["url"].as_str().unwrap(), "alice-sub");
        back_at_panel(&h, &callback, PANEL);
        let replay = expect(h.get(&callback), 400);
        assert_eq!(replay.field().as_deref(), Some("state"));

        // ID tokens an attacker forged, or meant for another client, or old: refused, and why.
        for (mode, why) in [
            ("forged", "signature"),
            ("hs256", "algorithm"),
            ("wrong_aud", "audience"),
            ("expired", "expire"),
            ("wrong_iss", "issuer"),
            ("no_nonce", "nonce"),
            ("wrong_nonce", "nonce"),
        ] {
            idp.spoil_next(mode);
            let e = refused(&sign_in(&h, &idp, "alice-sub"));
            assert!(e.to_lowercase().contains(why), "{mode}: {e}");
        }

        // Who the identity is: the claim's local part, in an allowed domain, verified.
        idp.user("carol-sub", &json!({"email": "carol@acme.example", "email_verified": true}));
        let e = refused(&sign_in(&h, &idp, "carol-sub"));
        assert!(e.contains("no user `carol`"), "{e}");
        idp.user("mallory-sub", &json!({"email": "alice@evil.example", "email_verified": true}));
        let e = refused(&sign_in(&h, &idp, "mallory-sub"));
        assert!(e.contains("evil.example is not one of the tenant's allowed domains"), "{e}");
        idp.user("unverified-sub", &json!({"email": "bob@acme.example", "email_verified": false}));
        let e = refused(&sign_in(&h, &idp, "unverified-sub"));
        assert!(e.contains("not verified"), "{e}");
        // Nor an address the provider does not say it verified (the nOAuth trick).
        idp.user("unverified-sub", &json!({"email": "bob@acme.example"}));
        let e = refused(&sign_in(&h, &idp, "unverified-sub"));
        assert!(e.contains("not verified"), "{e}");
        // A second identity that now carries Alice's address (a name given to someone else):
        // Alice is bound to the first.
        idp.user("mallory-sub", &json!({"email": "alice@acme.example", "email_verified": true}));
        let e = refused(&sign_in(&h, &idp, "mallory-sub"));
        assert!(e.contains("bound to another identity"), "{e}");
        // And Alice's identity, renamed to Bob at the provider, does not become Bob.
        idp.user("alice-sub", &json!({"email": "bob@acme.example", "email_verified": true}));
        let e = refused(&sign_in(&h, &idp, "alice-sub"));
        assert!(e.contains("signed in as another user before"), "{e}");

        // The user declines at the provider, which sends the browser back with the error and
        // the state (RFC 6749 4.1.2.1; the mock leaves the state out of its denial, so the
        // answer a compliant provider gives is written here).
        let go = expect(h.post("/api/auth/social_sign_in", &start), 200).json();
        let url = go["url"].as_str().unwrap();
        let q = pairs(url.split_once('?').unwrap().1);
        let back = format!(
            "/api/auth/social_sign_in/callback?error=access_denied&error_description=The+user+declined&state={}",
            pair(&q, "state").unwrap()
        );
        let e = refused(&back_at_panel(&h, &back, PANEL));
        assert!(e.contains("access_denied: The user declined"), "{e}");
        // An answer that names another issuer (RFC 9207: a provider answering for another, the
        // mix-up attack) is refused before its code is sent anywhere.
        let go = expect(h.post("/api/auth/social_sign_in", &start), 200).json();
        let url = go["url"].as_str().unwrap();
        let q = pairs(url.split_once('?').unwrap().1);
        let back = format!(
            "/api/auth/social_sign_in/callback?code=abc&iss=https%3A%2F%2Fevil.example&state={}",
            pair(&q, "state").unwrap()
        );
        let e = refused(&back_at_panel(&h, &back, PANEL));
        assert!(e.contains("issuer https://evil.example"), "{e}");

        // New users on first sign-in, when the tenant says so (the secret is kept when a change
        // leaves it out).
        let mut change = sso(&idp.base, PANEL);
        change.as_object_mut().unwrap().remove("client_secret");
        change["new_user_group"] = json!("nosuch");
        let bad = expect(a.call("PUT", "/api/v1/tenants/acme/sso", Some(&change)), 400);
        assert_eq!(bad.field().as_deref(), Some("new_user_group"));
        change["new_user_group"] = json!("staff");
        let view = expect(a.call("PUT", "/api/v1/tenants/acme/sso", Some(&change)), 200).json();
        assert_eq!(view["client_secret_set"], true, "kept");
        let tokens = redeem(&h, &sign_in(&h, &idp, "carol-sub"));
        let me = expect(h.with_token(tokens["access_token"].as_str().unwrap()).get("/api/auth/token"), 200).json();
        assert_eq!((me["user"].as_str(), me["role"].as_str()), (Some("carol"), Some("StandardUser")), "{me}");

        // The seed's 302 operation: a link on a sign-in page, straight on to the provider; the
        // tokens go to the tenant's callback.
        idp.user("alice-sub", &json!({"email": "alice@acme.example", "email_verified": true}));
        let r = expect(h.get("/api/auth/ms365_sign_in?domain=acme.example"), 302);
        let url = r.header("location").expect("Location").to_owned();
        let got = back_at_panel(&h, &at_provider(&idp, &url, "alice-sub"), PANEL);
        assert_eq!(redeem(&h, &got)["token_type"], "Bearer");
        expect(h.get("/api/auth/ms365_sign_in?domain=nosuch.example"), 404);

        // A callback that could not be a `Location` header is refused at the start.
        let odd = json!({"provider": "oidc", "domain": "acme.example", "callback": "https://panel.example.com/a b"});
        let e = expect(h.post("/api/auth/social_sign_in", &odd), 400);
        assert_eq!(e.field().as_deref(), Some("callback"));

        // A provider other than the tenant's is refused; Microsoft Entra ID is named by its
        // directory, and the tenant's info then says so as PortSIP does.
        let e = expect(h.post("/api/auth/social_sign_in", &json!({"provider": "microsoft", "domain": "acme.example"})), 400);
        assert_eq!(e.field().as_deref(), Some("provider"));
        expect(a.post("/api/v1/tenants", &json!({"id": "beta", "name": "Beta", "domain": "beta.example"})), 201);
        let ms = json!({"provider": "microsoft", "directory_id": "72f988bf-86f1-41af-91ab-2d7cd011db47",
                        "client_id": "11111111-2222-3333-4444-555555555555", "client_secret": "x",
                        "allowed_domains": ["beta.example"]});
        let view = expect(a.call("PUT", "/api/v1/tenants/beta/sso", Some(&ms)), 200).json();
        assert_eq!(view["issuer_url"], "https://login.microsoftonline.com/72f988bf-86f1-41af-91ab-2d7cd011db47/v2.0");
        let info = expect(h.get("/api/info?domain=beta.example"), 200).json();
        assert_eq!(info["enable_ms365_integration"], true);
        assert_eq!(
            info["ms365_authorization_endpoint"],
            "https://login.microsoftonline.com/72f988bf-86f1-41af-91ab-2d7cd011db47/oauth2/v2.0/authorize"
        );
        let e = expect(h.get("/api/auth/ms365_sign_in?domain=beta.example"), 400);
        assert_eq!(e.field().as_deref(), Some("callback"), "beta has no callback of its own");

        // Only an administrator of tenants sets a provider; Alice cannot.
        let alice = h.sign_in("alice", "a-long-password-1", "acme.example").0;
        expect(alice.call("PUT", "/api/v1/tenants/acme/sso", Some(&sso(&idp.base, PANEL))), 403);
        expect(a.call("DELETE", "/api/v1/tenants/acme/sso", None), 204);
        expect(h.post("/api/auth/social_sign_in", &start), 404);

        // Made-up states are counted against their source like failed sign-ins.
        let mut statuses = Vec::new();
        for i in 0..6 {
            statuses.push(h.get(&format!("/api/auth/social_sign_in/callback?state=made-up-{i}&code=x")).status);
        }
        // signin_failures = 5, and the replayed redirect above was the first.
        assert_eq!(statuses, [400, 400, 400, 400, 429, 429]);
        // Counted apart from password sign-in, which Alice can still use from here.
        h.sign_in("alice", "a-long-password-1", "acme.example");

        // A provider that cannot be reached: 502, and nothing of its answer (the log has it).
        let down = json!({"provider": "oidc", "issuer": "http://127.0.0.1:9", "client_id": "c",
                          "allowed_domains": ["beta.example"], "callback": PANEL});
        expect(a.call("PUT", "/api/v1/tenants/beta/sso", Some(&down)), 200);
        let e = expect(h.post("/api/auth/social_sign_in", &json!({"provider": "oidc", "domain": "beta.example"})), 502);
        assert!(e.text.contains("could not be reached or answered badly") && !e.text.contains("127.0.0.1"), "{}", e.text);
    });
}
