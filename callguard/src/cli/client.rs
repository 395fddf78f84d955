//! The CLI's side of the control API: HTTP/1.1 over the daemon's Unix socket.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, anyhow, bail};
use http_body_util::{BodyExt as _, Full};
use hyper::{Method, Request, body::Bytes};
use hyper_util::rt::TokioIo;
use serde::{Serialize, de::DeserializeOwned};

/// A connection target: the daemon's control socket.
#[derive(Clone, Debug)]
pub(super) struct Client {
    socket: PathBuf,
}

impl Client {
    /// A client for the daemon listening on `socket`.
    pub(super) fn new(socket: &Path) -> Self {
        Self { socket: socket.to_owned() }
    }

    /// GET `path` (with its query string).
    pub(super) async fn get<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        self.call(Method::GET, path, None::<&()>).await
    }

    /// POST `body` as JSON to `path`.
    pub(super) async fn post<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> anyhow::Result<T> {
        self.call(Method::POST, path, Some(body)).await
    }

    /// GET `path` and hand each line of the streamed answer to `line` until the daemon closes
    /// it (`events --follow`).
    pub(super) async fn stream_lines(&self, path: &str, mut line: impl FnMut(&str)) -> anyhow::Result<()> {
        let mut sender = self.connect().await?;
        let mut res = sender
            .send_request(request(Method::GET, path, Bytes::new())?)
            .await
            .context("sending the request")?;
        if !res.status().is_success() {
            let body = res.into_body().collect().await?.to_bytes();
            bail!("daemon answered: {}", String::from_utf8_lossy(&body));
        }
        let mut pending = Vec::new();
        while let Some(frame) = res.body_mut().frame().await {
            if let Ok(data) = frame?.into_data() {
                pending.extend_from_slice(&data);
                while let Some(nl) = pending.iter().position(|&b| b == b'\n') {
                    let rest = pending.split_off(nl + 1);
                    line(String::from_utf8_lossy(&pending[..nl]).trim_end());
                    pending = rest;
                }
            }
        }
        Ok(())
    }

    /// Sends `method path` with an optional raw JSON body; returns the status and the body
    /// text, whatever the status.
    pub(super) async fn raw(
        &self,
        method: &str,
        path: &str,
        body: Option<String>,
    ) -> anyhow::Result<(u16, String)> {
        let mut sender = self.connect().await?;
        let method =
            Method::from_bytes(method.as_bytes()).map_err(|_| anyhow!("`{method}` is not an HTTP method"))?;
        let req = request(method, path, Bytes::from(body.unwrap_or_default()))?;
        let res = sender.send_request(req).await.context("sending the request")?;
        let status = res.status().as_u16();
        let body = res.into_body().collect().await?.to_bytes();
        Ok((status, String::from_utf8_lossy(&body).into_owned()))
    }

    async fn connect(&self) -> anyhow::Result<hyper::client::conn::http1::SendRequest<Full<Bytes>>> {
        let stream = tokio::net::UnixStream::connect(&self.socket).await.map_err(|e| {
            let hint = match e.kind() {
                std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused => {
                    "is the daemon running? (`callguard run`, or systemctl status callguard)"
                }
                std::io::ErrorKind::PermissionDenied => "the control socket is root-only",
                _ => "",
            };
            anyhow!("cannot reach the daemon at {}: {e}; {hint}", self.socket.display())
        })?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(conn);
        Ok(sender)
    }

    /// Sends `method path` with an optional JSON body and returns the answer's body when the
    /// status is a success; otherwise the error the API gave, with the field it named. Both
    /// error shapes are read: the generic `{"error", "field"}` and the border-rule seed's
    /// `{"error_code", "error_message", "field"}`.
    pub(super) async fn send<B: Serialize>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
    ) -> anyhow::Result<Bytes> {
        let mut sender = self.connect().await?;
        let bytes = match body {
            Some(b) => Bytes::from(serde_json::to_vec(b)?),
            None => Bytes::new(),
        };
        let res = sender.send_request(request(method, path, bytes)?).await.context("sending the request")?;
        let status = res.status();
        let body = res.into_body().collect().await?.to_bytes();
        if status.is_success() {
            return Ok(body);
        }
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
        let message = v.get("error").or_else(|| v.get("error_message")).and_then(|m| m.as_str());
        match (message, v.get("field").and_then(|f| f.as_str())) {
            (Some(m), Some(f)) => bail!("{f}: {m}"),
            (Some(m), None) => bail!("{m}"),
            _ => bail!("daemon answered {status}: {}", String::from_utf8_lossy(&body)),
        }
    }

    async fn call<B: Serialize, T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
    ) -> anyhow::Result<T> {
        let body = self.send(method, path, body).await?;
        serde_json::from_slice(&body).with_context(|| format!("reading the daemon's answer to {path}"))
    }
}

/// `method path` with a JSON body (or none) to the daemon.
fn request(method: Method, path: &str, body: Bytes) -> anyhow::Result<Request<Full<Bytes>>> {
    Ok(Request::builder()
        .method(method)
        .uri(path)
        .header("host", "callguard")
        .header("content-type", "application/json")
        .body(Full::new(body))?)
}

/// A path segment, percent-encoded.
pub(crate) fn seg(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>().replace('+', "%20")
}

/// A query string (`?a=1&b=2`, or nothing) of a query struct; absent fields are left out.
pub(crate) fn query<T: Serialize>(q: &T) -> anyhow::Result<String> {
    let s = serde_urlencoded::to_string(q)?;
    Ok(if s.is_empty() { s } else { format!("?{s}") })
}

/// A query string of the pairs that have a value.
pub(crate) fn pairs(p: &[(&str, Option<String>)]) -> String {
    let mut s = form_urlencoded::Serializer::new(String::new());
    for (k, v) in p {
        if let Some(v) = v {
            s.append_pair(k, v);
        }
    }
    let s = s.finish();
    if s.is_empty() { s } else { format!("?{s}") }
}

pub(crate) fn typed<T: DeserializeOwned>(body: &Bytes, what: &str) -> anyhow::Result<T> {
    serde_json::from_slice(body).with_context(|| format!("reading the daemon's answer ({what})"))
}
