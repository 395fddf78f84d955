//! The Prometheus metrics as a monitoring system sees them: a daemon guarding the PBX end of a
//! veth pair, a scanner's OPTIONS and a phone's INVITE from the other end, then `GET /metrics`
//! on the default address, checked by Prometheus's own `promtool check metrics` and read for
//! the figures an operator graphs. Then the same endpoint on an address other hosts reach,
//! which answers only with the bearer token.

use std::{collections::BTreeMap, net::SocketAddr, process::Output, time::Duration};

use callguard_tests::{
    netns::{Instance, Netns, Topology},
    sipmsg::{self, SvTool},
};

const PBX: &str = Topology::PBX_V4;
const SCANNER: &str = "198.18.0.66";
const PHONE: &str = Topology::SOURCES_V4[0];
const TOKEN: &str = "a-scraper-token-of-some-length";

/// `curl` run in `ns` against `url` with `headers`; the output.
fn curl(ns: &Netns, url: &str, headers: &[&str]) -> Output {
    let mut args = vec!["curl", "-sS", "-D", "/dev/stderr", "--max-time", "10"];
    for h in headers {
        args.extend(["-H", h]);
    }
    args.push(url);
    ns.exec(&args)
}

fn scrape(ns: &Netns, url: &str, headers: &[&str]) -> String {
    let out = curl(ns, url, headers);
    assert!(out.status.success(), "curl {url}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).expect("UTF-8 metrics")
}

/// `promtool check metrics` on `text`: passes with nothing to say.
fn promtool(text: &str) {
    let mut promtool = std::process::Command::new("promtool");
    promtool.args(["check", "metrics"]);
    let out = callguard_tests::netns::with_stdin(promtool, text, "promtool");
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && said.trim().is_empty(), "promtool check metrics: {said}\n{text}");
}

/// The samples of `text` (`name{labels}` → value), comments left out.
fn samples(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            Some((series.to_owned(), value.parse().ok()?))
        })
        .collect()
}

/// The sum of the samples named `name` whose labels contain every one of `labels`.
fn value(s: &BTreeMap<String, f64>, name: &str, labels: &[&str]) -> f64 {
    s.iter()
        .filter(|(k, _)| k.split('{').next() == Some(name) && labels.iter().all(|l| k.contains(l)))
        .map(|(_, v)| v)
        .sum()
}

/// The callguard metric names in a PromQL expression.
fn metric_names(expr: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = expr;
    while let Some(i) = rest.find("callguard_") {
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'))
            .unwrap_or(tail.len());
        out.push(tail[..end].to_owned());
        rest = &tail[end..];
    }
    out
}

fn invite() -> Vec<u8> {
    format!(
        "INVITE sip:004930123@{PBX} SIP/2.0\r\n\
         Via: SIP/2.0/UDP {PHONE}:5062;branch=z9hG4bK-metrics\r\n\
         From: <sip:101@tenant.example>;tag=m1\r\n\
         To: <sip:004930123@{PBX}>\r\n\
         Call-ID: metrics-1@{PHONE}\r\n\
         CSeq: 1 INVITE\r\n\
         Max-Forwards: 70\r\n\
         User-Agent: Yealink SIP-T46S\r\n\
         Content-Length: 0\r\n\r\n"
    )
    .into_bytes()
}

#[test]
fn prometheus_reads_what_callguard_stopped_and_promtool_accepts_it() {
    let t = Topology::new();
    let inst = Instance::new(&t.pbx, &t.pbx_if, "");
    let daemon = inst.start();
    let url = "http://127.0.0.1:9787/metrics";

    // At rest: every family that needs no traffic is there already, and well formed.
    let idle = scrape(&t.pbx, url, &[]);
    promtool(&idle);
    let s = samples(&idle);
    assert_eq!(value(&s, "callguard_build_info", &[]), 1.0, "{idle}");
    assert_eq!(
        value(&s, "callguard_guarded_interface", &[&format!("interface=\"{}\"", t.pbx_if)]),
        1.0,
        "{idle}"
    );
    assert_eq!(
        value(&s, "callguard_map_capacity", &["map=\"CG_SOURCES\""]),
        f64::from(callguard_common::maps::SOURCES_MAX)
    );

    // A scanner, a blocked network, a phone's call (handed up: the fraud thresholds are on).
    inst.cli(&["net", "deny", "203.0.113.0/24", "--comment", "metrics test"]);
    let svmap = sipmsg::sipvicious(SvTool::Svmap, "OPTIONS", "", PBX, false);
    let pbx: SocketAddr = format!("{PBX}:5060").parse().expect("address");
    t.peer.ip(&["addr", "add", &format!("{SCANNER}/32"), "dev", &t.peer_if]);
    t.peer.udp(format!("{SCANNER}:5070").parse().expect("address")).send_to(&svmap, pbx).expect("sending");
    t.peer.udp(format!("{PHONE}:5062").parse().expect("address")).send_to(&invite(), pbx).expect("sending");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let (text, s) = loop {
        let text = scrape(&t.pbx, url, &[]);
        let s = samples(&text);
        if value(&s, "callguard_bans_total", &["cause=\"signature\""]) >= 1.0
            && value(&s, "callguard_slow_path_latency_seconds_count", &[]) >= 1.0
        {
            break (text, s);
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the scan and the call never showed:\n{text}\n{}",
            daemon.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    promtool(&text);
    assert_eq!(
        value(&s, "callguard_packets_total", &["action=\"drop\"", "reason=\"signature\""]),
        1.0,
        "{text}"
    );
    assert_eq!(value(&s, "callguard_signature_packets_total", &["text=\"friendly-scanner\""]), 1.0, "{text}");
    assert_eq!(value(&s, "callguard_slow_path_decisions_total", &["verdict=\"allow\""]), 1.0, "{text}");
    let waited = value(&s, "callguard_slow_path_latency_seconds_sum", &[]);
    assert!(waited > 0.0 && waited < 1.0, "a handed-up INVITE waited {waited} s:\n{text}");
    assert_eq!(value(&s, "callguard_auto_bans", &[]), 1.0, "the scanner's ban:\n{text}");
    assert_eq!(value(&s, "callguard_rules", &["action=\"deny\""]), 2.0, "the ban and the /24:\n{text}");
    assert_eq!(value(&s, "callguard_map_entries", &["map=\"CG_NET4_LPM\""]), 1.0, "{text}");
    assert!(value(&s, "callguard_map_entries", &["map=\"CG_SOURCES\""]) >= 1.0, "{text}");
    assert_eq!(value(&s, "callguard_kernel_bans", &[]), 1.0, "{text}");
    let beat = value(&s, "callguard_heartbeat_age_seconds", &[]);
    assert!(
        s.contains_key("callguard_heartbeat_age_seconds") && beat < 1.0,
        "heartbeat {beat} s old:\n{text}"
    );
    assert_eq!(s.get("callguard_store_errors_total"), Some(&0.0), "{text}");
    // The scanner again: denied now by its ban's rule, which, the busiest rule, gets a series
    // of its own (metrics are read afresh at most once a second).
    t.peer.udp(format!("{SCANNER}:5070").parse().expect("address")).send_to(&svmap, pbx).expect("sending");
    std::thread::sleep(Duration::from_millis(1100));
    let again = scrape(&t.pbx, url, &[]);
    let s2 = samples(&again);
    let ban_rule = format!("network=\"{SCANNER}/32\"");
    assert_eq!(value(&s2, "callguard_rule_packets_total", &[&ban_rule, "action=\"deny\""]), 1.0, "{again}");
    assert_eq!(
        value(&s2, "callguard_packets_total", &["action=\"drop\"", "reason=\"denied\""]),
        1.0,
        "{again}"
    );
    assert!(
        s2.contains_key("callguard_rule_packets_total{rule=\"other\",network=\"\",action=\"\"}"),
        "{again}"
    );

    // Every query of the Grafana dashboard in dist/ names metrics this daemon exports.
    let dashboard: serde_json::Value =
        serde_json::from_str(include_str!("../../dist/grafana/callguard.json"))
            .expect("the dashboard is JSON");
    let mut queried = 0;
    for panel in dashboard["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().expect("targets") {
            let expr = target["expr"].as_str().expect("a query");
            for name in metric_names(expr) {
                queried += 1;
                assert!(
                    s.keys().any(|k| k.split('{').next() == Some(name.as_str())),
                    "panel {:?} queries {name}, which the daemon does not export:\n{text}",
                    panel["title"]
                );
            }
        }
    }
    assert!(queried >= 16, "the dashboard queries {queried} metrics");

    // A scraper that asks for OpenMetrics gets it.
    let om = scrape(&t.pbx, url, &["Accept: application/openmetrics-text; version=1.0.0"]);
    assert!(om.ends_with("# EOF\n") && om.contains("# TYPE callguard_packets counter"), "{om}");
    daemon.stop();

    // On an address other hosts reach, a token is required, and refused without.
    let listen = format!("{PBX}:9787");
    let fine = inst.cli_output(&["config", "check"]);
    assert!(fine.status.success(), "{}", String::from_utf8_lossy(&fine.stderr));
    let text = std::fs::read_to_string(&inst.config).expect("the configuration");
    std::fs::write(&inst.config, format!("{text}\n[metrics]\nlisten = \"{listen}\"\n")).expect("writing");
    let refused = inst.cli_output(&["config", "check"]);
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success() && said.contains("metrics.token"), "{said}");
    std::fs::write(&inst.config, format!("{text}\n[metrics]\nlisten = \"{listen}\"\ntoken = \"{TOKEN}\"\n"))
        .expect("writing");
    let daemon = inst.start();
    let remote = format!("http://{listen}/metrics");
    let denied = curl(&t.peer, &remote, &[]);
    assert!(
        String::from_utf8_lossy(&denied.stderr).contains(" 401"),
        "{}",
        String::from_utf8_lossy(&denied.stderr)
    );
    let wrong = curl(&t.peer, &remote, &["Authorization: Bearer a-scraper-token-of-some-lengtH"]);
    assert!(
        String::from_utf8_lossy(&wrong.stderr).contains(" 401"),
        "{}",
        String::from_utf8_lossy(&wrong.stderr)
    );
    let granted = scrape(&t.peer, &remote, &[&format!("Authorization: Bearer {TOKEN}")]);
    promtool(&granted);
    assert_eq!(value(&samples(&granted), "callguard_build_info", &[]), 1.0);
    daemon.stop();
}
