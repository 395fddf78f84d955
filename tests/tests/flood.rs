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
    assert!(stdout.contains("every filter measured on every traffic: 32 cells"), "{stdout}");
    // The calls under flood: six filters, four traffics, one rate, and the three plots.
    assert!(
        stdout.contains("calls under flood: every filter measured on every traffic: 24 cells"),
        "{stdout}"
    );
    for plot in ["flood-cpu.png", "flood-leaked.png", "flood-calls.png"] {
        assert!(stdout.contains(&format!("/{plot}")), "no plot {plot}:\n{stdout}");
    }
}
