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
    /// verdict tests (BPF_PROG_TEST_RUN) and network-namespace integration tests. Needs root.
    Test {
        /// Skip formatting and clippy.
        #[arg(long)]
        no_lint: bool,
        /// Only tests whose name contains this.
        filter: Option<String>,
    },
    /// Clippy with -D warnings on the userspace crates and on the eBPF crate.
    Lint,
    /// The demo: two network namespaces, callguard guarding a UDP listener, allowed and blocked
    /// traffic sent across, counters shown. Needs root; cleans up after itself.
    Demo,
    /// Benchmarks. Kernel: per-packet cost of each verdict path through BPF_PROG_TEST_RUN next to a
    /// pass-everything program, and lookup/load cost with 100, 10,000 and 1,000,000 prefixes;
    /// then the slow path: hand-up latency next to the fast path, and the highest decided rate.
    Bench {
        /// Repetitions per kernel measurement.
        #[arg(long, default_value_t = 1_000_000)]
        repeat: u32,
        /// Which part: `kernel` (BPF_PROG_TEST_RUN), `slow-path` (hand-up latency and
        /// highest rate, over veth), or `all`.
        #[arg(long, default_value = "all", value_parser = ["all", "kernel", "slow-path"])]
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
    run(cargo()
        .args(["clippy", "--workspace", "--exclude", "callguard-ebpf", "--all-targets", "--locked"])
        .args(["--", "-D", "warnings"]))?;
    // The eBPF crate is checked for its own target, as aya-build compiles it.
    // `rustup run` rather than `cargo +nightly`: $CARGO is the stable toolchain's own binary.
    run(Command::new("rustup")
        .args(["run", "nightly", "cargo", "clippy", "-p", "callguard-ebpf", "--target", "bpfel-unknown-none"])
        .args(["-Z", "build-std=core", "--release", "--", "-D", "warnings"])
        .env("CARGO_TARGET_DIR", root().join("target/ebpf-clippy")))
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
        Task::Test { no_lint, filter } => {
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
            if let Some(f) = filter {
                cmd.arg(f);
            }
            run_counting(&mut cmd)
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
