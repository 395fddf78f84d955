//! The daemon's process wiring: starts the rule service, the slow path's thread, the event
//! reader, the sweeper and SIGHUP reloads, serves the API on the root-only Unix socket and on
//! `api.listen`, and stops on SIGTERM or SIGINT. Filtering stays in place after it exits.

use std::{
    os::unix::fs::PermissionsExt as _,
    path::Path,
    sync::{Arc, Mutex},
    time::Duration,
};

use anyhow::Context as _;
use callguard_common::events::event;
use tokio::signal::unix::{SignalKind, signal};

pub use crate::service::Options;
use crate::{
    alerts,
    calls::slowpath,
    clock::Clock,
    config::Config,
    events::{self, Hub},
    kernel, metrics, refresh,
    service::{self, Service},
    web::{
        self,
        state::{Shared, lock},
    },
};

/// Reads the kernel's events until the daemon stops: bans become rules, everything is published.
async fn event_loop(s: Shared, ring: aya::maps::RingBuf<aya::maps::MapData>) {
    // SAFETY: the ring buffer owns its map fd, which stays open and the same for as long as
    // the RingBuf lives, and the AsyncFd owns the RingBuf.
    let registered =
        unsafe { tokio::io::unix::AsyncFd::register_with_interest(ring, tokio::io::Interest::READABLE) };
    let mut ring = match registered {
        Ok(r) => r,
        Err(e) => {
            tracing::error!("watching the event ring buffer: {e}; bans will not be stored as rules");
            return;
        }
    };
    loop {
        let batch = match events::read_ring(&mut ring).await {
            Ok(b) => b,
            Err(e) => {
                tracing::error!("reading the event ring buffer: {e}");
                return;
            }
        };
        // One lock, one store transaction and one kernel update per batch, and on a blocking
        // thread: a storm of new sources (one ban each) must stall neither the API nor the
        // runtime's workers.
        let s2 = s.clone();
        let records = tokio::task::spawn_blocking(move || {
            let clock = Clock::now();
            let mut st = lock(&s2);
            let mut records: Vec<_> = batch
                .iter()
                .map(|e| {
                    let mut rec = events::record(e, &clock);
                    st.name_slots(e, &mut rec);
                    rec
                })
                .collect();
            let bans: Vec<(usize, (std::net::IpAddr, u8, u16))> = batch
                .iter()
                .enumerate()
                .filter(|(i, _)| records[*i].kind == events::EventKind::Ban)
                .map(|(i, e)| (i, (records[i].source, e.kind, e.sig_slot)))
                .collect();
            let details = st.auto_bans(&bans.iter().map(|(_, b)| *b).collect::<Vec<_>>());
            for ((i, _), d) in bans.iter().zip(details) {
                records[*i].detail = d;
            }
            for r in records.iter_mut().filter(|r| r.kind == events::EventKind::Guard) {
                r.detail = st.guard_detail(&r.user);
                tracing::warn!(user = %r.user, last_source = %r.source, "{}", r.detail);
            }
            records
        })
        .await;
        match records {
            Ok(records) => records.into_iter().for_each(|r| s.hub.publish(r)),
            Err(e) => tracing::error!("storing a batch of bans: {e}"),
        }
    }
}

/// Stores the bans the slow path asks for (the sources of calls past a fraud threshold, when
/// `calls.fraud.ban_secs` is set) as the kernel's are stored, and publishes each as an event.
async fn fraud_bans(s: Shared, mut bans: tokio::sync::mpsc::Receiver<std::net::IpAddr>) {
    while let Some(source) = bans.recv().await {
        let s2 = s.clone();
        let record = tokio::task::spawn_blocking(move || {
            let detail = lock(&s2).auto_bans(&[(source, event::BAN_FRAUD, 0)]).pop().unwrap_or_default();
            events::EventRecord {
                time: chrono::Utc::now(),
                kind: events::EventKind::Ban,
                source,
                reason: "fraud".into(),
                method: "INVITE".into(),
                rule: None,
                signature: None,
                user_agent: String::new(),
                detail,
                user: String::new(),
            }
        })
        .await;
        match record {
            Ok(r) => s.hub.publish(r),
            Err(e) => tracing::error!("storing a fraud ban: {e}"),
        }
    }
}

fn bind_socket(path: &Path) -> anyhow::Result<tokio::net::UnixListener> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    if path.exists() {
        // A live daemon answers on it; a stale file from a killed one does not.
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            anyhow::bail!("another callguard daemon is serving {}", path.display());
        }
        std::fs::remove_file(path).with_context(|| format!("removing stale socket {}", path.display()))?;
    }
    // Created 0600 by the daemon's umask (no window between bind and chmod); set again all the
    // same, and every connection's peer is checked too (`RootOnly`).
    let listener =
        tokio::net::UnixListener::bind(path).with_context(|| format!("binding {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

/// Runs the daemon until SIGTERM or SIGINT. Filtering stays in place after it exits.
pub async fn run(opts: Options) -> anyhow::Result<()> {
    // Everything the daemon creates (the database with password hashes and authorization codes,
    // its directory, the control socket, the pins) is for root alone, whatever umask it was
    // started with: outside systemd that is usually 022.
    // SAFETY: umask only swaps the process's file-creation mask; it cannot fail.
    unsafe { libc::umask(0o077) };
    let mut state = Service::start(opts)?;
    if kernel::pins_are_private() == Some(true) {
        tracing::error!(
            "the pins under /sys/fs/bpf are on a BPF file system private to this daemon (it runs in a \
             mount namespace of its own, as `ip netns exec` gives): the filter ends when the daemon \
             does, and a restarted daemon cannot adopt it. Run it in the host's mount namespace \
             (`nsenter --net=/run/netns/NAME callguard run` enters only the network namespace)"
        );
    }
    if let Some(password) = state.bootstrap_admin()? {
        // Into a file only root can read, not the log: only its hash is stored, and a journal
        // is read by more people than root.
        let file = state.cfg().database.with_file_name("admin-password");
        std::fs::write(&file, format!("{password}\n"))
            .with_context(|| format!("writing the administrator's first password to {}", file.display()))?;
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600))?;
        println!(
            "callguard: created the system administrator `admin`; its first password is in {} (root only).\n\
             callguard: sign in with it and choose a new one (required before anything else), then delete the file",
            file.display()
        );
    }
    let cfg = state.cfg().clone();
    let socket = cfg.socket.clone();
    let listen = cfg.api.listen.clone();
    let sweep_every = Duration::from_secs(cfg.sweep_interval_secs);
    let service::Rings { events: ring, handup } = state.take_rings();
    let hub = Hub::new(cfg.events.log_per_sec);
    let (ban_tx, ban_rx) = tokio::sync::mpsc::channel(1024);
    let mut slow = match handup {
        Some(maps) => {
            let sp = slowpath::SlowPath::new(
                state.live_calls(),
                hub.clone(),
                Duration::from_secs(cfg.calls.retransmit_secs),
                state.slow_stats(),
                state.proven(),
            )
            .context("opening the raw sockets of the slow path (needs CAP_NET_RAW)")?
            .banning_to(ban_tx)
            .timed_by(state.slow_latency());
            Some(slowpath::spawn(sp, maps).context("starting the slow path's thread")?)
        }
        None => None,
    };
    let tls = match (&cfg.api.tls_cert, &cfg.api.tls_key) {
        (Some(cert), Some(key)) if !listen.is_empty() => Some(web::tls::acceptor(cert, key)?),
        _ => None,
    };
    let shared = Shared { state: Arc::new(Mutex::new(state)), hub, web: Arc::default() };
    // A filter that will not start because a port for its metrics is taken protects nothing:
    // without the port, the daemon runs without metrics and says so.
    let metrics = if cfg.metrics.listen.is_empty() {
        None
    } else {
        match tokio::net::TcpListener::bind(&cfg.metrics.listen).await {
            Ok(l) => {
                tracing::info!(address = %cfg.metrics.listen, "Prometheus metrics at /metrics");
                Some((l, metrics::Exporter::new(shared.clone(), cfg.pin_dir.clone(), cfg.metrics.clone())))
            }
            Err(e) => {
                tracing::error!(
                    "binding the metrics to {} (metrics.listen): {e}; running without metrics",
                    cfg.metrics.listen
                );
                None
            }
        }
    };
    let reader = ring.map(|r| tokio::spawn(event_loop(shared.clone(), r)));
    tokio::spawn(fraud_bans(shared.clone(), ban_rx));
    // Read once at start: a reload does not change where alerts go.
    tokio::spawn(alerts::run(cfg.alerts.clone(), shared.hub.subscribe()));
    let listener = bind_socket(&socket)?;
    tracing::info!(socket = %socket.display(), "control API listening");
    let tcp = if listen.is_empty() {
        None
    } else {
        let l = tokio::net::TcpListener::bind(&listen)
            .await
            .with_context(|| format!("binding the API to {listen} (api.listen)"))?;
        tracing::info!(address = %listen, https = tls.is_some(), "management API listening");
        if tls.is_none() && !l.local_addr().is_ok_and(|a| a.ip().is_loopback()) {
            tracing::warn!(
                address = %listen,
                "the management API speaks plain HTTP on an address other hosts can reach: passwords \
                 and tokens cross the network readable; set api.tls_cert and api.tls_key"
            );
        }
        Some(l)
    };

    let sweeper = {
        let s = shared.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(sweep_every);
            loop {
                tick.tick().await;
                match lock(&s).sweep() {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(expired = n, "removed expired rules"),
                    Err(e) => tracing::error!("sweeping expired rules: {e:#}"),
                }
            }
        })
    };
    let hup = {
        let s = shared.clone();
        let mut sig = signal(SignalKind::hangup())?;
        tokio::spawn(async move {
            while sig.recv().await.is_some() {
                if let Err(e) = lock(&s).reload() {
                    tracing::error!("reload refused, nothing changed: {e:#}");
                }
                // Also after a refusal: a reload that failed late may have taken the new file's
                // settings; the refreshers follow whatever is in force.
                s.web.reloaded.notify_one();
            }
        })
    };
    let feeds = tokio::spawn(refresh::supervise(shared.clone()));
    let countries = tokio::spawn(refresh::watch_countries(shared.clone()));
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let metrics = metrics
        .map(|(l, ex)| tokio::spawn(metrics::serve(l, ex, cfg.api.limits(), stopped(stop_rx.clone()))));
    let app = web::router(shared);
    let unix_app = app.clone().layer(axum::Extension(web::Transport::Unix));
    let unix = axum::serve(web::serve::RootOnly(listener), unix_app)
        .with_graceful_shutdown(stopped(stop_rx.clone()));
    let scheme = if tls.is_some() { "https" } else { "http" };
    let limits = cfg.api.limits();
    let http: Option<std::pin::Pin<Box<dyn Future<Output = ()> + Send>>> = match (tcp, tls) {
        (None, _) => None,
        (Some(l), None) => Some(Box::pin(web::serve::serve(l, app, limits, stopped(stop_rx.clone())))),
        (Some(l), Some(tls)) => Some(Box::pin(web::serve::serve(
            web::tls::TlsListener::new(l, tls)?,
            app,
            limits,
            stopped(stop_rx.clone()),
        ))),
    };
    println!(
        "callguard: ready (control socket {}{})",
        socket.display(),
        if listen.is_empty() { String::new() } else { format!(", API {scheme}://{listen}") }
    );
    // The slow path's thread ending on its own (its ring failed, it panicked) leaves every call
    // to the failure policy: stop, and exit with an error so that the service manager restarts
    // the daemon (the unit's Restart=on-failure), rather than serve on as if all were well.
    let slow_ended = slow.as_mut().and_then(slowpath::Running::ended);
    let signals = async move {
        let lost = async move {
            match slow_ended {
                Some(rx) => {
                    let _ = rx.await;
                }
                None => std::future::pending().await,
            }
        };
        let lost_slow_path = tokio::select! {
            _ = term.recv() => false,
            _ = int.recv() => false,
            () = lost => true,
        };
        if lost_slow_path {
            tracing::error!(
                "the slow path stopped: calls go by the failure policy (calls.fail) until callguard \
                 restarts; stopping so that the service manager restarts it"
            );
        }
        let _ = stop_tx.send(true);
        lost_slow_path
    };
    let http = async move {
        if let Some(h) = http {
            h.await;
        }
    };
    let (u, (), lost_slow_path) = tokio::join!(async move { unix.await }, http, signals);
    u?;
    sweeper.abort();
    hup.abort();
    feeds.abort();
    countries.abort();
    if let Some(m) = metrics {
        m.abort();
    }
    if let Some(r) = reader {
        r.abort();
    }
    if let Some(s) = slow {
        // The heartbeat stops with it: within a second the kernel applies the failure policy.
        s.stop();
    }
    std::fs::remove_file(&socket).ok();
    tracing::info!(
        "stopped; the XDP program stays attached and keeps enforcing (callguard detach removes it)"
    );
    anyhow::ensure!(!lost_slow_path, "the slow path stopped on its own (see the log above)");
    Ok(())
}

/// `callguard detach`: removes links, maps and the pin directory.
pub fn detach(pin_dir: &Path) -> anyhow::Result<Vec<String>> {
    kernel::detach_all(pin_dir)
}

/// `callguard config check`: the file as the daemon will read it, with the TLS key pair loaded
/// (a bad pair fails here, not at start).
pub fn check_config(cfg: &Config) -> anyhow::Result<()> {
    if let (Some(cert), Some(key)) = (&cfg.api.tls_cert, &cfg.api.tls_key) {
        web::tls::acceptor(cert, key)?;
    }
    Ok(())
}

/// The management API served on a thread of its own, stopped when dropped.
#[derive(Debug)]
pub struct ApiThread {
    /// Where it listens.
    pub addr: std::net::SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for ApiThread {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Serves the HTTP API of `service` on `listen` (port 0: any free port) from a thread with a
/// runtime of its own, without the control socket, the slow path or the event reader: what a
/// test of the API needs, with a service over an in-memory store and a fake datapath.
pub fn serve_api(mut service: Service, listen: std::net::SocketAddr) -> anyhow::Result<ApiThread> {
    service.bootstrap_admin()?;
    let listener = std::net::TcpListener::bind(listen).with_context(|| format!("binding {listen}"))?;
    listener.set_nonblocking(true)?;
    let addr = listener.local_addr()?;
    let hub = Hub::new(service.cfg().events.log_per_sec);
    let limits = service.cfg().api.limits();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let thread = std::thread::Builder::new().name("callguard-api".into()).spawn(move || {
        rt.block_on(async move {
            let shared = Shared { state: Arc::new(Mutex::new(service)), hub, web: Arc::default() };
            let app = web::router(shared);
            let Ok(l) = tokio::net::TcpListener::from_std(listener) else { return };
            web::serve::serve(l, app, limits, async move {
                let _ = stopped.await;
            })
            .await;
        });
    })?;
    Ok(ApiThread { addr, stop: Some(stop), thread: Some(thread) })
}
