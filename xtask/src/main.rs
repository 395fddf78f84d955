//! `cargo xtask …`: callguard's build, test, bench and demo orchestration.
//!
//! Each command first installs what it needs when it is missing (`scripts/bootstrap.sh`: Debian
//! packages, nightly `rust-src`, `bpf-linker` built against LLVM 22) and skips what is there.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "xtask", about = "callguard's build, test, bench and demo tasks")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Debug, Subcommand)]
enum Task {
    /// Install missing prerequisites (Debian packages, rust-src, bpf-linker).
    Setup,
    /// Run every check and test: formatting, import cycles, clippy (userspace and eBPF), unit tests, kernel
    /// verdict tests (BPF_PROG_TEST_RUN), network-namespace integration tests, and every fuzz
    /// target for 10 s. Needs root.
    Test {
        /// Skip formatting and clippy.
        #[arg(long)]
        no_lint: bool,
        /// Skip the short fuzzing run at the end (10 s per target).
        #[arg(long)]
        no_fuzz: bool,
        /// Only tests whose name contains this.
        filter: Option<String>,
    },
    /// Clippy with -D warnings on the userspace crates and on the eBPF crate.
    Lint,
    /// The demo: two network namespaces, callguard guarding a UDP listener, allowed and blocked
    /// traffic sent across, counters shown. Needs root; cleans up after itself.
    Demo,
    /// Fuzzing (libFuzzer, through libfuzzer-sys): the daemon's SIP parser (`message`), the
    /// kernel's SIP reader in userspace (`sip_reader`), the configuration file (`config`) and the
    /// API's list parameters (`list_query`), each from a seed corpus and a dictionary written by
    /// `callguard-fuzz-seeds`. Prints, per target, the coverage counters reached of those
    /// instrumented; a crash stops with the input's path. Corpora grow in target/fuzz/corpus.
    /// Built optimised (the `release` profile: ~40,000 inputs a second); the test command's short
    /// run builds with the quicker `fuzz` profile instead (see `fuzz/Cargo.toml`).
    Fuzz {
        /// Seconds per target.
        #[arg(long, default_value_t = 60)]
        secs: u64,
        /// Only this target.
        target: Option<String>,
    },
    /// Benchmarks. Kernel: per-packet cost of each verdict path through BPF_PROG_TEST_RUN next to a
    /// pass-everything program, each SIP row against its floor (the lookups plus reading the
    /// packet once), and lookup/load cost with 100, 10,000 and 1,000,000 prefixes; flood: CPU per
    /// packet of callguard, nftables, iptables, xdp-filter, Kamailio and no filter on the same
    /// floods (live frames); then the
    /// slow path: hand-up latency next to the fast path, and the highest decided rate.
    Bench {
        /// Repetitions per kernel measurement.
        #[arg(long, default_value_t = 1_000_000)]
        repeat: u32,
        /// Which part: `kernel` (BPF_PROG_TEST_RUN), `flood` (live frames into the stack, side by
        /// side with the peers), `slow-path` (hand-up latency and highest rate, over veth), or
        /// `all`.
        #[arg(long, default_value = "all", value_parser = ["all", "kernel", "flood", "slow-path"])]
        only: String,
    },
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("xtask lives in the workspace").to_owned()
}

fn run(cmd: &mut Command) -> anyhow::Result<()> {
    eprintln!("\x1b[1m$ {}\x1b[0m", format!("{cmd:?}").replace('"', ""));
    let status = cmd.current_dir(root()).status().with_context(|| format!("starting {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed ({status})");
    }
    Ok(())
}

/// Runs a `cargo test`, echoing its output, and ends with one line totalling every test
/// binary's `test result:` line, so the suite's outcome is one line to read.
fn run_counting(cmd: &mut Command) -> anyhow::Result<()> {
    use std::io::{BufRead as _, BufReader};
    eprintln!("\x1b[1m$ {}\x1b[0m", format!("{cmd:?}").replace('"', ""));
    let mut child = cmd.current_dir(root()).stdout(std::process::Stdio::piped()).spawn()?;
    let (mut passed, mut failed) = (0u64, 0u64);
    let stdout = child.stdout.take().context("test output")?;
    for line in BufReader::new(stdout).lines() {
        let line = line?;
        println!("{line}");
        if let Some(rest) = line.strip_prefix("test result: ") {
            let num = |word: &str| -> u64 {
                rest.split(';')
                    .find_map(|p| p.trim().strip_suffix(word)?.trim().rsplit(' ').next()?.parse().ok())
                    .unwrap_or(0)
            };
            passed += num("passed");
            failed += num("failed");
        }
    }
    let status = child.wait()?;
    println!("tests: {passed} passed, {failed} failed");
    if !status.success() {
        bail!("{cmd:?} failed ({status})");
    }
    Ok(())
}

fn cargo() -> Command {
    Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
}

fn setup() -> anyhow::Result<()> {
    run(Command::new("bash").arg("scripts/bootstrap.sh"))
}

fn require_root(what: &str) -> anyhow::Result<()> {
    let out = Command::new("id").arg("-u").output()?;
    if String::from_utf8_lossy(&out.stdout).trim() != "0" {
        bail!("{what} loads XDP programs and creates network namespaces: run it as root");
    }
    Ok(())
}

fn lint() -> anyhow::Result<()> {
    run(cargo().args(["fmt", "--all", "--check"]))?;
    // Layers import only downwards: no module of a crate may import, through any chain, a module
    // that imports it back (`scripts/module-cycles` reads the `use crate::` paths).
    run(Command::new("python3").args([
        "scripts/module-cycles",
        "callguard/src",
        "callguard-common/src",
        "callguard-ebpf/src",
    ]))?;
    // The eBPF crate has its own panic handler and cannot build for the host as a binary.
    // --release: the proc macros, build scripts and C code (SQLite, ring) it compiles are then
    // the ones the release test build uses, instead of a second debug-profile set.
    run(cargo()
        .args([
            "clippy",
            "--workspace",
            "--exclude",
            "callguard-ebpf",
            "--all-targets",
            "--locked",
            "--release",
        ])
        .args(["--", "-D", "warnings"]))?;
    // The eBPF crate is checked for its own target, as aya-build compiles it.
    // `rustup run` rather than `cargo +nightly`: $CARGO is the stable toolchain's own binary.
    run(Command::new("rustup")
        .args(["run", "nightly", "cargo", "clippy", "-p", "callguard-ebpf", "--target", "bpfel-unknown-none"])
        .args(["-Z", "build-std=core", "--release", "--", "-D", "warnings"])
        .env("CARGO_TARGET_DIR", root().join("target/ebpf-clippy")))
}

/// The fuzz targets of `fuzz/Cargo.toml`.
const FUZZ_TARGETS: [&str; 4] = ["message", "sip_reader", "config", "list_query"];

/// Builds the fuzz targets with coverage instrumentation (the flags cargo-fuzz passes, without
/// a sanitizer: the code under test is safe Rust, and a panic is what is looked for) in cargo
/// profile `profile`, writes the seeds, and runs each target for `secs`; one line per target
/// with what it reached.
fn fuzz(secs: u64, only: Option<&str>, profile: &str) -> anyhow::Result<()> {
    let dir = root().join("target/fuzz");
    run(cargo()
        .args([
            "run",
            "--release",
            "--locked",
            "-p",
            "callguard-tests",
            "--bin",
            "callguard-fuzz-seeds",
            "--",
        ])
        .arg(&dir))?;
    let flags = [
        "-Cpasses=sancov-module",
        "-Cllvm-args=-sanitizer-coverage-level=4",
        "-Cllvm-args=-sanitizer-coverage-inline-8bit-counters",
        "-Cllvm-args=-sanitizer-coverage-pc-table",
        "-Cllvm-args=-sanitizer-coverage-trace-compares",
        "--cfg=fuzzing",
        "-Cdebug-assertions",
        "-Coverflow-checks",
    ]
    .join(" ");
    // An explicit --target keeps the flags off build scripts; AYA_BUILD_SKIP: the XDP object is
    // not what is fuzzed.
    let host = "x86_64-unknown-linux-gnu";
    run(cargo()
        .args([
            "build",
            "--profile",
            profile,
            "--locked",
            "--bins",
            "--manifest-path",
            "fuzz/Cargo.toml",
            "--target",
            host,
        ])
        .env("RUSTFLAGS", flags)
        .env("AYA_BUILD_SKIP", "1")
        .env("CARGO_TARGET_DIR", dir.join("build")))?;
    let mut summary = Vec::new();
    for t in FUZZ_TARGETS.iter().filter(|t| only.is_none_or(|o| o == **t)) {
        let corpus = dir.join("corpus").join(t);
        let artifacts = dir.join("artifacts").join(t);
        std::fs::create_dir_all(&corpus)?;
        std::fs::create_dir_all(&artifacts)?;
        let bin = dir.join("build").join(host).join(profile).join(t);
        eprintln!("\x1b[1m$ {} ({secs} s)\x1b[0m", bin.display());
        let out = Command::new(&bin)
            .arg(&corpus)
            .arg(dir.join("seeds").join(t))
            .arg(format!("-dict={}", dir.join(format!("{t}.dict")).display()))
            .arg(format!("-max_total_time={secs}"))
            .arg(format!("-artifact_prefix={}/", artifacts.display()))
            .args(["-print_final_stats=1", "-timeout=10", "-rss_limit_mb=4096", "-max_len=4096"])
            .output()
            .with_context(|| format!("starting {}", bin.display()))?;
        let log = String::from_utf8_lossy(&out.stderr);
        // "INFO: Loaded 1 modules   (3675 inline 8-bit counters)", then "#N DONE cov: C ft: …".
        let counters = log.lines().find_map(|l| {
            l.strip_prefix("INFO: Loaded 1 modules")?
                .split('(')
                .nth(1)?
                .split_whitespace()
                .next()?
                .parse::<u64>()
                .ok()
        });
        let done = log.lines().rev().find(|l| l.contains(" cov: ")).unwrap_or_default();
        let word = |w: &str| done.split_whitespace().skip_while(|x| *x != w).nth(1).unwrap_or("?").to_owned();
        let runs = log
            .lines()
            .find_map(|l| l.strip_prefix("stat::number_of_executed_units:"))
            .unwrap_or("?")
            .trim()
            .to_owned();
        if !out.status.success() {
            eprintln!("{log}");
            bail!("fuzz target {t} failed: the input is in {}", artifacts.display());
        }
        summary.push(format!(
            "fuzz {t}: {} of {} coverage counters, {} features, {runs} inputs in {secs} s, no failure",
            word("cov:"),
            counters.map_or("?".into(), |c| c.to_string()),
            word("ft:"),
        ));
    }
    for line in summary {
        println!("{line}");
    }
    Ok(())
}

/// Builds and runs one of the `callguard-tests` binaries (demo, bench) in release mode.
fn run_tests_bin(name: &str, args: &[String]) -> anyhow::Result<()> {
    // Every binary: the demo and the bench start `callguard-under-test` from beside themselves.
    run(cargo().args(["build", "--release", "--locked", "-p", "callguard-tests", "--bins"]))?;
    run(cargo()
        .args(["run", "--release", "--locked", "-p", "callguard-tests", "--bin", name, "--"])
        .args(args))
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().task {
        Task::Setup => setup(),
        Task::Lint => {
            setup()?;
            lint()
        }
        Task::Test { no_lint, no_fuzz, filter } => {
            setup()?;
            require_root("the test suite")?;
            if !no_lint {
                lint()?;
            }
            let mut cmd = cargo();
            // The eBPF crate builds only for its own target (through callguard's build script).
            // --all-targets: unit, integration and binary tests, no doc tests (there are none).
            cmd.args([
                "test",
                "--workspace",
                "--exclude",
                "callguard-ebpf",
                "--all-targets",
                "--locked",
                "--release",
            ]);
            let whole = filter.is_none();
            if let Some(f) = filter {
                cmd.arg(f);
            }
            run_counting(&mut cmd)?;
            // Every fuzz target briefly, from its seeds: what a change broke in the parsers
            // shows here; longer runs are `cargo xtask fuzz`.
            if whole && !no_fuzz { fuzz(10, None, "fuzz") } else { Ok(()) }
        }
        Task::Fuzz { secs, target } => {
            setup()?;
            fuzz(secs, target.as_deref(), "release")
        }
        Task::Demo => {
            setup()?;
            require_root("the demo")?;
            run_tests_bin("callguard-demo", &[])
        }
        Task::Bench { repeat, only } => {
            setup()?;
            require_root("the benchmark")?;
            run_tests_bin("callguard-bench", &[repeat.to_string(), only])
        }
    }
}
