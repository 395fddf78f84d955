//! Country rules as an operator uses them: a MaxMind-format country database (written here with
//! mmdb-writer from PyPI, the format GeoLite2 and DB-IP lite use), `callguard net deny --country`,
//! packets from the country's addresses dropped at the NIC, `net check` naming the country, the
//! rule following the database when its file changes, and keeping its networks when the new file
//! is damaged.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use callguard_tests::netns::{Instance, Topology};

const PBX: &str = Topology::PBX_V4;

/// Writes a country database at `path`: each (network, field, code), field `country` or
/// `registered_country`.
fn mmdb(path: &Path, entries: &[(&str, &str, &str)]) {
    let python = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/tools/mmdb-writer/bin/python");
    let mut script = "from netaddr import IPSet\nfrom mmdb_writer import MMDBWriter\n\
        w = MMDBWriter(ip_version=6, ipv4_compatible=True, database_type='GeoLite2-Country', \
        languages=['en'], description='callguard test')\n"
        .to_owned();
    for (net, field, code) in entries {
        script.push_str(&format!(
            "w.insert_network(IPSet(['{net}']), {{'{field}': {{'iso_code': '{code}'}}}})\n"
        ));
    }
    // Written beside and renamed over, as a database updater does.
    let tmp = path.with_extension("new");
    script.push_str(&format!("w.to_db_file('{}')\n", tmp.display()));
    let out = Command::new(&python).arg("-c").arg(&script).output().expect("mmdb-writer (cargo xtask setup)");
    assert!(out.status.success(), "mmdb-writer: {}", String::from_utf8_lossy(&out.stderr));
    std::fs::rename(&tmp, path).expect("renaming the database into place");
}

fn json(inst: &Instance, args: &[&str]) -> serde_json::Value {
    serde_json::from_str(&inst.cli(args)).unwrap_or_else(|e| panic!("callguard {args:?}: {e}"))
}

/// (verdict, origin, list) of `net check ip`.
fn check(inst: &Instance, ip: &str) -> (String, String, String) {
    let c = json(inst, &["net", "check", ip, "--json"]);
    let s = |v: &serde_json::Value| v.as_str().unwrap_or_default().to_owned();
    (s(&c["verdict"]), s(&c["rule"]["origin"]), s(&c["rule"]["list"]))
}

fn deny(list: &str) -> (String, String, String) {
    ("deny".into(), "country".into(), list.into())
}

fn none() -> (String, String, String) {
    ("none".into(), String::new(), String::new())
}

#[test]
fn country_rules_drop_the_country_and_follow_its_database() {
    let t = Topology::new();
    let dir = tempfile::tempdir().expect("tempdir");
    let db: PathBuf = dir.path().join("GeoLite2-Country.mmdb");
    mmdb(
        &db,
        &[
            ("198.18.0.10/32", "country", "CN"),
            ("198.18.0.11/32", "country", "CN"),
            ("2001:db8::10/128", "country", "CN"),
            ("198.18.0.13/32", "registered_country", "CN"),
            ("198.18.0.12/32", "country", "DE"),
        ],
    );
    let inst = Instance::new(
        &t.pbx,
        &t.pbx_if,
        &format!("[geoip]\ndatabase = \"{}\"\ncheck_secs = 1\n", db.display()),
    );
    t.pbx.nft(
        "table inet geo {
            counter cn {}
            counter de {}
            chain in {
                type filter hook input priority 0;
                ip saddr 198.18.0.10 udp dport 5060 counter name \"cn\"
                ip saddr 198.18.0.12 udp dport 5060 counter name \"de\"
            }
        }",
    );
    let daemon = inst.start();

    // A bad code is refused, naming the field; a good one takes the country's four networks.
    let bad = inst.cli_output(&["net", "deny", "--country", "CHN"]);
    assert!(String::from_utf8_lossy(&bad.stderr).contains("code: `CHN` is not a two-letter country code"));
    let said = inst.cli(&["net", "deny", "--country", "cn", "--comment", "no business there"]);
    assert_eq!(said.trim(), "deny country CN: 4 networks", "{said}");
    assert_eq!(check(&inst, "198.18.0.10"), deny("country:CN"));
    assert_eq!(check(&inst, "2001:db8::10"), deny("country:CN"));
    assert_eq!(
        check(&inst, "198.18.0.13"),
        deny("country:CN"),
        "registered_country counts where country is absent"
    );
    assert_eq!(check(&inst, "198.18.0.12"), none());
    let human = inst.cli(&["net", "check", "198.18.0.10"]);
    assert!(human.contains("country CN"), "net check names the country rule: {human}");

    // The kernel drops the country's packets; the other country's pass.
    let options = |src: &str| {
        format!(
            "OPTIONS sip:100@{PBX} SIP/2.0\r\nVia: SIP/2.0/UDP {src}:5062;branch=z9hG4bK5\r\nFrom: <sip:201@{src}>;tag=1\r\n\
             To: <sip:100@{PBX}>\r\nCall-ID: c@{src}\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
        )
    };
    for src in ["198.18.0.10", "198.18.0.12"] {
        let sock = t.peer.udp(format!("{src}:5062").parse().unwrap());
        for _ in 0..3 {
            sock.send_to(options(src).as_bytes(), format!("{PBX}:5060").parse::<SocketAddr>().unwrap())
                .unwrap();
        }
    }
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!((t.pbx.nft_counter("geo", "cn"), t.pbx.nft_counter("geo", "de")), (0, 3));
    let listed = inst.cli(&["net", "list"]);
    assert!(listed.contains("country rules") && listed.contains("no business there"), "{listed}");

    // The database changes: 198.18.0.11 moves to DE, 198.18.0.14 comes to CN. The rule follows
    // within a check or two, without being asked.
    mmdb(
        &db,
        &[
            ("198.18.0.10/32", "country", "CN"),
            ("198.18.0.14/32", "country", "CN"),
            ("2001:db8::10/128", "country", "CN"),
            ("198.18.0.11/32", "country", "DE"),
            ("198.18.0.12/32", "country", "DE"),
        ],
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while check(&inst, "198.18.0.14") != deny("country:CN") {
        assert!(Instant::now() < deadline, "the rule did not follow the database:\n{}", daemon.log());
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(check(&inst, "198.18.0.11"), none(), "198.18.0.11 left the country but is still denied");
    assert_eq!(check(&inst, "198.18.0.13"), none());

    // A damaged file changes nothing.
    std::fs::write(&db, b"\x00\x01 not a database").unwrap();
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(check(&inst, "198.18.0.10"), deny("country:CN"));
    assert_eq!(check(&inst, "198.18.0.14"), deny("country:CN"));
    assert!(daemon.log().contains("country rules keep their networks"), "{}", daemon.log());

    // Deleting the rule takes its networks.
    let said = inst.cli(&["net", "del", "--country", "CN"]);
    assert!(said.contains("its 3 networks"), "{said}");
    assert_eq!(check(&inst, "198.18.0.10"), none());
    let left = json(&inst, &["net", "list", "--json"]);
    assert_eq!(left.as_array().map(Vec::len), Some(0), "{left}");
}
