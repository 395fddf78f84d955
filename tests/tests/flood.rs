//! The flood benchmark (`cargo xtask bench --only flood`) cannot rot: its short version runs
//! here, one small run per cell, and must measure every filter on every traffic. It asserts no
//! timing: the figures live in the benchmark and the README.

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
}
