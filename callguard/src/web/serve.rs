//! Serving the API on its TCP listener with the limits a listener anyone can reach needs
//! (review finding M8): axum's own `serve` sets no timer, so hyper's header timeout never runs,
//! and it takes every connection it is offered.
//!
//! - **Connections**: at most `api.max_connections` at once, `api.max_connections_per_source`
//!   from one address (an IPv6 /64 counts as one). Past the total, new connections wait in the
//!   kernel's backlog; past a source's share, they are closed at once. Both stay well below the
//!   process's descriptor limit, so the root control socket, served by its own listener, can
//!   always accept.
//! - **Time**: the request head must arrive within `api.request_timeout_secs` (which also closes
//!   idle keep-alive connections: hyper starts the same timer while it waits for the next head),
//!   and the request must be read and answered within that time again (`408`); a response that
//!   streams (`GET /v1/events`) is not cut once it has started.
//!
//! Written here rather than taken from a crate because it is the accept loop itself: hyper's
//! connection builder does the HTTP, `tokio` the waiting.

use std::{
    collections::HashMap,
    future::Future,
    net::{IpAddr, SocketAddr},
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{Router, extract::ConnectInfo, http::StatusCode, response::IntoResponse as _};
use hyper_util::{
    rt::{TokioIo, TokioTimer},
    server::graceful::GracefulShutdown,
};
use tokio::sync::Semaphore;
use tower::ServiceExt as _;

use super::{Failure, Peer};
use crate::{api::ApiError, config::ListenerLimits as Limits};

/// Connections open per source, for [`Limits::per_source`].
#[derive(Debug, Default)]
struct Sources(Mutex<HashMap<String, usize>>);

impl Sources {
    /// Counts one more connection from `key`; `false` when it already has `max`.
    fn take(&self, key: &str, max: usize) -> bool {
        let mut m = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let n = m.entry(key.to_owned()).or_default();
        if *n >= max {
            return false;
        }
        *n += 1;
        true
    }

    /// One connection from `key` ended.
    fn give_back(&self, key: &str) {
        let mut m = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(n) = m.get_mut(key) {
            *n -= 1;
            if *n == 0 {
                m.remove(key);
            }
        }
    }
}

/// Gives a source's connection back when the connection ends, however it ends.
struct SourceSlot {
    sources: Arc<Sources>,
    key: String,
}

impl Drop for SourceSlot {
    fn drop(&mut self) {
        self.sources.give_back(&self.key);
    }
}

/// Serves `app` on `listener` (plain TCP or the TLS listener) within `limits` until `shutdown`
/// completes, then lets the open connections finish their requests.
pub async fn serve<L>(mut listener: L, app: Router, limits: Limits, shutdown: impl Future<Output = ()>)
where
    L: axum::serve::Listener<Addr = SocketAddr>,
{
    let slots = Arc::new(Semaphore::new(limits.connections));
    let sources = Arc::new(Sources::default());
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let slot = tokio::select! {
            () = &mut shutdown => break,
            slot = slots.clone().acquire_owned() => match slot {
                Ok(s) => s,
                Err(_) => break,
            },
        };
        let (io, peer) = tokio::select! {
            () = &mut shutdown => break,
            conn = listener.accept() => conn,
        };
        let key = Peer(Some(peer.ip())).key("conn");
        if !sources.take(&key, limits.per_source) {
            tracing::debug!(%peer, "refused an API connection: its source has {} open", limits.per_source);
            continue;
        }
        let source_slot = SourceSlot { sources: sources.clone(), key };
        let app = app.clone();
        let handle = hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
            req.extensions_mut().insert(ConnectInfo(peer));
            let app = app.clone();
            async move {
                match tokio::time::timeout(limits.request, app.oneshot(req)).await {
                    Ok(res) => res,
                    Err(_) => Ok(timed_out(limits.request, peer.ip())),
                }
            }
        });
        let mut http = hyper::server::conn::http1::Builder::new();
        http.timer(TokioTimer::new()).header_read_timeout(limits.request).keep_alive(true);
        let conn = graceful.watch(http.serve_connection(TokioIo::new(io), handle));
        tokio::spawn(async move {
            let (_slot, _source) = (slot, source_slot);
            if let Err(e) = conn.await {
                tracing::debug!(%peer, "API connection ended: {e}");
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
}

/// The control socket's listener: a connection is served only when its peer (`SO_PEERCRED`) is
/// root or this daemon's own user. The socket file's mode (0600) already keeps others out; this
/// holds even when that mode is changed by mistake.
#[derive(Debug)]
pub struct RootOnly(pub tokio::net::UnixListener);

impl axum::serve::Listener for RootOnly {
    type Io = tokio::net::UnixStream;
    type Addr = tokio::net::unix::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        // SAFETY: geteuid cannot fail and touches nothing.
        let me = unsafe { libc::geteuid() };
        loop {
            match self.0.accept().await {
                Ok((stream, addr)) => match stream.peer_cred() {
                    Ok(c) if c.uid() == 0 || c.uid() == me => return (stream, addr),
                    Ok(c) => {
                        tracing::warn!(uid = c.uid(), pid = ?c.pid(), "refused a control-socket connection: not root");
                    }
                    Err(e) => tracing::warn!("refused a control-socket connection: its peer is unknown: {e}"),
                },
                Err(e) => {
                    // Out of file descriptors, typically: wait rather than spin.
                    tracing::warn!("accepting a control-socket connection: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.0.local_addr()
    }
}

/// The answer to a request not read and answered in time.
fn timed_out(limit: Duration, peer: IpAddr) -> axum::response::Response {
    tracing::debug!(%peer, "API request not read and answered within {} s", limit.as_secs());
    Failure(
        StatusCode::REQUEST_TIMEOUT,
        ApiError {
            error: format!("the request was not received and answered within {} s", limit.as_secs()),
            field: None,
        },
    )
    .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_source_gets_its_share_and_no_more_and_gets_it_back() {
        let s = Arc::new(Sources::default());
        assert!(s.take("a", 2) && s.take("a", 2));
        assert!(!s.take("a", 2), "a third connection from one source");
        assert!(s.take("b", 2), "another source is not concerned");
        drop(SourceSlot { sources: s.clone(), key: "a".into() });
        assert!(s.take("a", 2), "a closed connection gives its place back");
        s.give_back("a");
        s.give_back("a");
        s.give_back("b");
        assert!(s.0.lock().unwrap().is_empty(), "no key kept for sources without connections");
    }
}
