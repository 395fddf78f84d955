//! The flood benchmark (`cargo xtask bench --only flood`) cannot rot: its short version runs
//! here, one small run per cell (both parts: the CPU per packet, and the calls under flood at
//! one rate for a second), and must measure every filter on every traffic and draw its plots.
//! It asserts no timing: the figures live in the benchmark and the README.

use std::process::Command;

#[test]
fn the_flood_benchmark_measures_every_filter_on_every_traffic() {
    let out = Command::new(env!("CARGO_BIN_EXE_callguard-bench"))
        .args(["1", "flood-short"])
        .output()
        .expect("running callguard-bench");
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "callguard-bench flood-short failed:\n{stdout}\n{stderr}");
    println!("{stdout}");
    for filter in
        ["none", "nftables", "iptables bm", "iptables kmp", "xdp-filter", "kamailio", "callguard", "XDP drop"]
    {
        assert!(stdout.contains(filter), "no {filter} column:\n{stdout}");
    }
    assert!(stdout.contains("every filter measured on every traffic: 48 cells"), "{stdout}");
    // The calls under flood: six filters, five traffics, one rate, and the three plots.
    assert!(
        stdout.contains("calls under flood: every filter measured on every traffic: 30 cells"),
        "{stdout}"
    );
    for plot in ["flood-cpu.png", "flood-leaked.png", "flood-calls.png"] {
        assert!(stdout.contains(&format!("/{plot}")), "no plot {plot}:\n{stdout}");
    }
    // The filters that read SIP stop every sipvicious OPTIONS before the SIP server, whatever
    // its source (Kamailio by its User-Agent; callguard by signature or the /19's deny rule).
    for traffic in [
        "sipvicious OPTIONS, one source",
        "sipvicious OPTIONS, 4,096 sources",
        "sipvicious OPTIONS, new source every packet",
    ] {
        for filter in ["kamailio", "callguard"] {
            assert_eq!(leaked(&stdout, traffic, filter), 0.0, "{filter} on {traffic}:\n{stdout}");
        }
    }
    assert_eq!(leaked(&stdout, "OPTIONS from a blocked /19", "callguard"), 0.0, "{stdout}");
}

/// The "flood at server/s" column of `filter`'s row in the calls-under-flood table of the
/// traffic named `traffic`.
fn leaked(stdout: &str, traffic: &str, filter: &str) -> f64 {
    let table = stdout
        .split("calls under flood:")
        .nth(1)
        .and_then(|part| part.split(&format!("\n{traffic}")).nth(1))
        .unwrap_or_else(|| panic!("no calls-under-flood table for {traffic}"));
    let row = table
        .lines()
        .skip(1) // the rest of the traffic's name line
        .take_while(|l| !l.is_empty())
        .find(|l| l.split_whitespace().next() == Some(filter))
        .unwrap_or_else(|| panic!("no {filter} row for {traffic}"));
    // filter, offered, received, CPU, flood at server/s, ...
    let cells: Vec<&str> = row.split_whitespace().collect();
    cells[4].parse().unwrap_or_else(|_| panic!("no figure in {row:?}"))
}
