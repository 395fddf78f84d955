//! A client of the management API for tests: blocking HTTP/1.1 (ureq) from inside the
//! namespace the daemon listens in, with any method (the border rules' `LOOKUP`), statuses as
//! values rather than errors.

use std::time::Duration;

use serde_json::Value;

/// One answer.
#[derive(Debug, Clone)]
pub struct Answer {
    /// HTTP status.
    pub status: u16,
    /// Response headers, names lower-case.
    pub headers: Vec<(String, String)>,
    /// The body as text (lossy).
    pub text: String,
    /// The body as it came.
    pub bytes: Vec<u8>,
}

impl Answer {
    /// The body as JSON (`Null` when it is not JSON).
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or(Value::Null)
    }

    /// A header's value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    /// The `field` an error names (in any of the seeds' error shapes).
    pub fn field(&self) -> Option<String> {
        let j = self.json();
        [&j["field"], &j["error"]["field"]].into_iter().find_map(|f| f.as_str().map(str::to_owned))
    }
}

/// A client for `http://127.0.0.1:8887` (or another base), optionally with a bearer token.
/// Call it only on a thread inside the daemon's namespace ([`crate::netns::Netns::run`]).
#[derive(Debug, Clone)]
pub struct Http {
    /// Base URL.
    pub base: String,
    /// Bearer token sent with every request.
    pub token: Option<String>,
    /// For `https://`: the one certificate (DER) trusted as root; `None`: the web's roots.
    pub ca: Option<Vec<u8>>,
}

impl Http {
    /// A client without a token.
    pub fn new(base: &str) -> Self {
        Self { base: base.trim_end_matches('/').into(), token: None, ca: None }
    }

    /// The same client trusting only `ca_der` for HTTPS.
    pub fn trusting(&self, ca_der: &[u8]) -> Self {
        Self { ca: Some(ca_der.to_vec()), ..self.clone() }
    }

    /// The same client with `token`.
    pub fn with_token(&self, token: &str) -> Self {
        Self { token: Some(token.into()), ..self.clone() }
    }

    /// Sends `method path` with an optional JSON body (sent as given, so that malformed JSON can
    /// be tested).
    pub fn raw(&self, method: &str, path: &str, body: Option<&str>) -> Answer {
        self.try_raw(method, path, body).unwrap_or_else(|e| panic!("{method} {path}: {e}"))
    }

    /// As [`Http::raw`], but a transport failure (the daemon is gone) is an error, not a panic.
    pub fn try_raw(&self, method: &str, path: &str, body: Option<&str>) -> Result<Answer, String> {
        self.send(method, path, body.map(|b| ("application/json", b.as_bytes().to_vec())))
    }

    /// Sends `method path` with a body of the given content type (an image, say).
    pub fn upload(&self, method: &str, path: &str, content_type: &str, body: &[u8]) -> Answer {
        self.send(method, path, Some((content_type, body.to_vec())))
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
    }

    fn send(&self, method: &str, path: &str, body: Option<(&str, Vec<u8>)>) -> Result<Answer, String> {
        let mut tls = ureq::tls::TlsConfig::builder();
        if let Some(der) = &self.ca {
            let root = ureq::tls::Certificate::from_der(der).to_owned();
            tls = tls.root_certs(ureq::tls::RootCerts::Specific(std::sync::Arc::new(vec![root])));
        }
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .tls_config(tls.build())
            .http_status_as_error(false)
            .allow_non_standard_methods(true)
            // A redirect is an answer to check (social sign-in), not one to follow.
            .max_redirects(0)
            .timeout_global(Some(Duration::from_secs(20)))
            .build()
            .into();
        let mut req = ureq::http::Request::builder().method(method).uri(format!("{}{path}", self.base));
        if let Some(t) = &self.token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        let res = match body {
            Some((content_type, b)) => {
                agent.run(req.header("content-type", content_type).body(b).expect("request"))
            }
            None => agent.run(req.body(()).expect("request")),
        };
        let mut res = res.map_err(|e| e.to_string())?;
        let headers = res
            .headers()
            .iter()
            .map(|(k, v)| (k.as_str().to_ascii_lowercase(), v.to_str().unwrap_or_default().to_owned()))
            .collect();
        let bytes = res.body_mut().with_config().limit(16 << 20).read_to_vec().unwrap_or_default();
        let text = String::from_utf8_lossy(&bytes).into_owned();
        Ok(Answer { status: res.status().as_u16(), headers, text, bytes })
    }

    /// `method path` with a JSON body.
    pub fn call(&self, method: &str, path: &str, body: Option<&Value>) -> Answer {
        self.raw(method, path, body.map(ToString::to_string).as_deref())
    }

    /// GET.
    pub fn get(&self, path: &str) -> Answer {
        self.call("GET", path, None)
    }

    /// POST JSON.
    pub fn post(&self, path: &str, body: &Value) -> Answer {
        self.call("POST", path, Some(body))
    }

    /// POST JSON from the local address `source` (a 127.0.0.0/8 address: the kernel picks
    /// 127.0.0.1 for every loopback connection otherwise), over plain HTTP/1.1 written by hand:
    /// ureq cannot bind the local end. For what the server makes of the client's address
    /// (sign-in throttling).
    pub fn post_from(&self, source: std::net::Ipv4Addr, path: &str, body: &Value) -> Answer {
        use std::io::{Read, Write};
        let host = self.base.strip_prefix("http://").expect("post_from speaks plain HTTP");
        let to: std::net::SocketAddr = host.parse().expect("an ADDRESS:PORT base");
        let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
        sock.bind(&std::net::SocketAddr::from((source, 0)).into()).expect("bind the source address");
        sock.connect_timeout(&to.into(), Duration::from_secs(5)).expect("connect");
        let mut stream = std::net::TcpStream::from(sock);
        stream.set_read_timeout(Some(Duration::from_secs(20))).expect("timeout");
        let body = body.to_string();
        let mut head = format!(
            "POST {path} HTTP/1.1\r\nhost: {host}\r\nconnection: close\r\ncontent-type: application/json\r\ncontent-length: {}\r\n",
            body.len()
        );
        if let Some(t) = &self.token {
            head.push_str(&format!("authorization: Bearer {t}\r\n"));
        }
        stream.write_all(format!("{head}\r\n{body}").as_bytes()).expect("send");
        let mut raw = String::new();
        stream.read_to_string(&mut raw).expect("read the answer");
        let (head, text) = raw.split_once("\r\n\r\n").expect("an HTTP answer");
        let mut lines = head.lines();
        let status =
            lines.next().and_then(|l| l.split(' ').nth(1)).and_then(|c| c.parse().ok()).expect("status");
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
            .collect();
        assert!(
            !headers.iter().any(|(k, v)| k == "transfer-encoding" && v.contains("chunked")),
            "post_from reads only answers with a length"
        );
        Answer { status, headers, text: text.to_owned(), bytes: text.as_bytes().to_vec() }
    }

    /// Signs in; returns a client carrying the access token, and the whole answer.
    pub fn sign_in(&self, username: &str, password: &str, domain: &str) -> (Self, Value) {
        let a = self.post(
            "/api/auth/sign_in",
            &serde_json::json!({"username": username, "password": password, "domain": domain}),
        );
        assert_eq!(a.status, 200, "sign in {username}@{domain}: {}", a.text);
        let j = a.json();
        (self.with_token(j["access_token"].as_str().expect("access_token")), j)
    }
}

/// Asserts the status, showing the body when it differs; returns the answer.
#[track_caller]
pub fn expect(a: Answer, status: u16) -> Answer {
    assert_eq!(a.status, status, "answer: {}", a.text);
    a
}

/// A daemon guarding nothing, serving the API on `127.0.0.1:8887` inside a namespace of its
/// own, with the system administrator `admin` / [`ApiServer::ADMIN_PASSWORD`]. Everything is
/// removed on drop.
#[derive(Debug)]
pub struct ApiServer {
    /// The daemon (killed on drop).
    pub daemon: Option<crate::netns::Daemon>,
    /// Its paths (pins removed on drop).
    pub inst: crate::netns::Instance,
    /// Its namespace (deleted on drop, after the daemon).
    pub ns: crate::netns::Netns,
}

impl ApiServer {
    /// The administrator's password.
    pub const ADMIN_PASSWORD: &str = "admin-password-1";

    /// Starts the daemon with `extra` TOML keys in its `[api]` section.
    pub fn start(api_extra: &str) -> Self {
        let ns = crate::netns::Netns::new("cg-api");
        let inst = crate::netns::Instance::guarding(
            &ns,
            &[],
            &format!("[api]\nadmin_password = \"{}\"\n{api_extra}", Self::ADMIN_PASSWORD),
        );
        let daemon = Some(inst.start());
        Self { daemon, inst, ns }
    }

    /// Runs `f` with an anonymous client, on a thread inside the namespace.
    pub fn run<T: Send + 'static>(&self, f: impl FnOnce(Http) -> T + Send + 'static) -> T {
        self.ns.run(move || f(Http::new("http://127.0.0.1:8887")))
    }

    /// Kills the daemon with SIGKILL.
    pub fn kill9(&mut self) {
        if let Some(d) = self.daemon.take() {
            d.kill9();
        }
    }

    /// Starts the daemon again (after [`ApiServer::kill9`]).
    pub fn restart(&mut self) {
        self.kill9();
        self.daemon = Some(self.inst.start());
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// The management API in this process: the rule service over an in-memory store and a fake
/// kernel, served on a free port of 127.0.0.1. No root, namespace or loaded program: the API
/// tests that do not need the kernel run this way, in a fraction of a second each.
#[derive(Debug)]
pub struct LocalApi {
    /// The server (stopped on drop).
    pub api: callguard::daemon::ApiThread,
    /// The fake kernel behind it: what the service wrote, and knobs to make it refuse.
    pub kernel: callguard::kernel::fake::FakeKernel,
}

impl LocalApi {
    /// Starts it with `extra` TOML keys in the configuration's `[api]` section.
    pub fn start(api_extra: &str) -> Self {
        use callguard::{
            config::Config,
            kernel::fake::FakeKernel,
            service::{Options, Service},
            store::SqliteStore,
        };
        let cfg =
            Config::parse(&format!("[api]\nadmin_password = \"{}\"\n{api_extra}", ApiServer::ADMIN_PASSWORD))
                .expect("configuration");
        let (kernel, datapath) = FakeKernel::new();
        let store = SqliteStore::memory().expect("in-memory store");
        let service = Service::with_parts(Options::default(), cfg, Box::new(store), Box::new(datapath))
            .expect("service");
        let api = callguard::daemon::serve_api(service, ([127, 0, 0, 1], 0).into()).expect("serving the API");
        Self { api, kernel }
    }

    /// Runs `f` with an anonymous client of this API.
    pub fn run<T>(&self, f: impl FnOnce(Http) -> T) -> T {
        f(Http::new(&format!("http://{}", self.api.addr)))
    }
}
