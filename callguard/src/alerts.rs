//! Alerts (`[alerts]`, issue 17 item 5): every ban and every call refused by a fraud threshold,
//! told as it happens, by an HTTP POST of the event as JSON (the record `callguard events
//! --json` prints) and by a command that reads the same JSON on its standard input. At most
//! `alerts.per_minute` a minute, so a ban storm does not become a storm of requests; webhook
//! deliveries are retried. Written on hyper's HTTP/1 client (already the CLI's), plain HTTP only:
//! HTTPS would need a certificate store the daemon does not otherwise keep.

use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use http_body_util::Full;
use hyper::{Request, Uri, body::Bytes, header};
use hyper_util::rt::TokioIo;
use tokio::{io::AsyncWriteExt as _, sync::broadcast};

use crate::{
    config::Alerts,
    events::{EventKind, EventRecord},
};

/// Whether an event is an alert: a ban, or a call refused by a fraud threshold.
pub fn is_alert(rec: &EventRecord) -> bool {
    matches!(rec.kind, EventKind::Ban | EventKind::Guard)
        || (rec.kind == EventKind::Call && rec.reason == "deny/fraud")
}

/// At most `per_minute` alerts in each minute (a fixed window), counting what it held back.
#[derive(Debug)]
struct Limiter {
    per_minute: u32,
    start: Instant,
    sent: u32,
    held: u64,
}

impl Limiter {
    fn new(per_minute: u32, now: Instant) -> Self {
        Self { per_minute, start: now, sent: 0, held: 0 }
    }

    /// Whether an alert at `now` may go; when a new minute begins, how many the last one held
    /// back (to be logged).
    fn admit(&mut self, now: Instant) -> (bool, u64) {
        let mut held = 0;
        if now.duration_since(self.start) >= Duration::from_secs(60) {
            held = std::mem::take(&mut self.held);
            (self.start, self.sent) = (now, 0);
        }
        if self.sent >= self.per_minute {
            self.held += 1;
            return (false, held);
        }
        self.sent += 1;
        (true, held)
    }
}

/// Sends the alerts among the events of `events` until the hub closes. Nothing to do when
/// neither a webhook nor a command is configured.
pub async fn run(cfg: Alerts, mut events: broadcast::Receiver<EventRecord>) {
    if cfg.webhook.is_empty() && cfg.command.is_empty() {
        return;
    }
    let webhook: Option<Uri> = cfg.webhook.parse().ok();
    let mut limiter = Limiter::new(cfg.per_minute, Instant::now());
    // The command runs for one alert at a time, in order: a script that appends to a file, or
    // pages someone, need not cope with copies of itself.
    let (commands, queued) = tokio::sync::mpsc::channel::<Bytes>(COMMANDS_QUEUED);
    if !cfg.command.is_empty() {
        tokio::spawn(command_runner(cfg.command.clone(), queued));
    }
    loop {
        let rec = match events.recv().await {
            Ok(rec) => rec,
            Err(broadcast::error::RecvError::Lagged(n)) => {
                tracing::warn!("alerts: {n} events passed while alerts were being sent; some may be missing");
                continue;
            }
            Err(broadcast::error::RecvError::Closed) => return,
        };
        if !is_alert(&rec) {
            continue;
        }
        let (admitted, held) = limiter.admit(Instant::now());
        if held > 0 {
            tracing::warn!("alerts: {held} alerts not sent in the last minute (alerts.per_minute)");
        }
        if !admitted {
            continue;
        }
        let body = match serde_json::to_vec(&rec) {
            Ok(b) => Bytes::from(b),
            Err(e) => {
                tracing::error!("alerts: {e}");
                continue;
            }
        };
        if let Some(uri) = &webhook {
            tokio::spawn(deliver(uri.clone(), body.clone(), cfg.retries));
        }
        if !cfg.command.is_empty() && commands.try_send(body).is_err() {
            tracing::warn!(
                "alerts: {COMMANDS_QUEUED} alerts wait for the command already; this one is not run"
            );
        }
    }
}

/// POSTs `body` to `uri`, again after 1, 2, 4 … s while it fails, `retries` times at most.
async fn deliver(uri: Uri, body: Bytes, retries: u32) {
    let mut wait = Duration::from_secs(1);
    for attempt in 0..=retries {
        match post(&uri, body.clone()).await {
            Ok(()) => return,
            Err(e) if attempt < retries => {
                tracing::debug!("alerts: webhook {uri}: {e:#}; again in {} s", wait.as_secs());
                tokio::time::sleep(wait).await;
                wait *= 2;
            }
            Err(e) => tracing::warn!("alerts: webhook {uri}: {e:#}; gave up after {} attempts", retries + 1),
        }
    }
}

/// One POST, 5 s at most for each step.
async fn post(uri: &Uri, body: Bytes) -> anyhow::Result<()> {
    const STEP: Duration = Duration::from_secs(5);
    let host = uri.host().context("no host")?;
    let port = uri.port_u16().unwrap_or(80);
    let stream = tokio::time::timeout(STEP, tokio::net::TcpStream::connect((host, port)))
        .await
        .context("connecting: timed out")?
        .context("connecting")?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let authority = uri.authority().map_or(host, |a| a.as_str());
    let req = Request::post(uri.path_and_query().map_or("/", |p| p.as_str()))
        .header(header::HOST, authority)
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::USER_AGENT, "callguard")
        .body(Full::new(body))?;
    let res = tokio::time::timeout(STEP, sender.send_request(req)).await.context("answer: timed out")??;
    if !res.status().is_success() {
        bail!("answered {}", res.status());
    }
    Ok(())
}

/// Alerts waiting for the command at most.
const COMMANDS_QUEUED: usize = 64;

/// Runs the alert command for each alert queued, one after the other.
async fn command_runner(argv: Vec<String>, mut queued: tokio::sync::mpsc::Receiver<Bytes>) {
    while let Some(body) = queued.recv().await {
        command(&argv, body).await;
    }
}

/// Runs the alert command with `body` on its standard input, 10 s at most.
async fn command(argv: &[String], body: Bytes) {
    let run = async {
        let mut child = tokio::process::Command::new(&argv[0])
            .args(&argv[1..])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", argv[0]))?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin.write_all(&body).await.context("writing the alert")?;
        }
        let status = child.wait().await?;
        if !status.success() {
            bail!("{} exited with {status}", argv[0]);
        }
        anyhow::Ok(())
    };
    match tokio::time::timeout(Duration::from_secs(10), run).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!("alerts: command: {e:#}"),
        Err(_) => tracing::warn!("alerts: command {} took more than 10 s: killed", argv[0]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_limiter_admits_per_minute_and_counts_the_rest() {
        let t0 = Instant::now();
        let mut l = Limiter::new(3, t0);
        let admitted: Vec<bool> = (0..5).map(|_| l.admit(t0).0).collect();
        assert_eq!(admitted, [true, true, true, false, false]);
        // A new minute: the two held back are reported once, and alerts go again.
        assert_eq!(l.admit(t0 + Duration::from_secs(60)), (true, 2));
        assert_eq!(l.admit(t0 + Duration::from_secs(61)), (true, 0));
    }

    #[test]
    fn bans_guards_and_fraud_refusals_are_alerts_other_events_are_not() {
        let rec = |kind, reason: &str| EventRecord {
            time: chrono::Utc::now(),
            kind,
            source: "198.51.100.1".parse().unwrap(),
            reason: reason.into(),
            method: "INVITE".into(),
            rule: None,
            signature: None,
            user_agent: String::new(),
            detail: String::new(),
            user: String::new(),
        };
        assert!(is_alert(&rec(EventKind::Ban, "authentication")));
        assert!(is_alert(&rec(EventKind::Guard, "guarded_user")));
        assert!(is_alert(&rec(EventKind::Call, "deny/fraud")));
        assert!(!is_alert(&rec(EventKind::Call, "deny/disallowed_code")));
        assert!(!is_alert(&rec(EventKind::Drop, "signature")));
    }
}
