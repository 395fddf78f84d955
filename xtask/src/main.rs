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
    /// Build the Debian package: the binary, the systemd unit, the commented configuration in
    /// /etc/callguard (a conffile), man pages, shell completions (bash, zsh, fish), the Grafana
    /// dashboard and the maintainer scripts of `dist/debian`. Prints the package's path and its
    /// files. Install it with `apt install ./target/debian/callguard_*.deb`.
    Deb {
        /// The package's version (default: the workspace's, as in Cargo.toml).
        #[arg(long)]
        version: Option<String>,
        /// Directory the .deb is written into.
        #[arg(long, default_value = "target/debian")]
        out: PathBuf,
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

/// Cargo, without what `cargo run` told xtask about itself: build scripts that read
/// `CARGO_MANIFEST_DIR` (ring's) are rerun when it changes, so a build from xtask and one from the
/// shell would each rebuild TLS and the daemon after the other.
fn cargo() -> Command {
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    for (name, _) in std::env::vars_os() {
        let n = name.to_string_lossy();
        if n.starts_with("CARGO_PKG_")
            || [
                "CARGO_MANIFEST_DIR",
                "CARGO_MANIFEST_PATH",
                "CARGO_CRATE_NAME",
                "CARGO_BIN_NAME",
                "CARGO_PRIMARY_PACKAGE",
            ]
            .contains(&n.as_ref())
        {
            cmd.env_remove(&name);
        }
    }
    cmd
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
        .args(["--", "-D", "warnings"])
        // Lints need no XDP object (empty ones are embedded): its build is the test build's.
        .env("AYA_BUILD_SKIP", "1"))?;
    // The eBPF crate is checked for its own target, as aya-build compiles it, in both builds
    // (`callguard_common::loops`).
    // `rustup run` rather than `cargo +nightly`: $CARGO is the stable toolchain's own binary.
    for features in [&[][..], &["--features", "may-goto"]] {
        run(Command::new("rustup")
            .args([
                "run",
                "nightly",
                "cargo",
                "clippy",
                "-p",
                "callguard-ebpf",
                "--target",
                "bpfel-unknown-none",
            ])
            .args(features)
            .args(["-Z", "build-std=core", "--release", "--", "-D", "warnings"])
            .env("CARGO_TARGET_DIR", root().join("target/ebpf-clippy")))?;
    }
    Ok(())
}

/// The fuzz targets of `fuzz/Cargo.toml`.
const FUZZ_TARGETS: [&str; 4] = ["message", "sip_reader", "config", "list_query"];

/// Whether the fuzz targets' seed writer (`callguard-fuzz-seeds`) is built already: the
/// workspace's test build (`cargo xtask test`) builds it with the other binaries.
#[derive(Clone, Copy)]
enum Seeds {
    Built,
    Build,
}

/// Builds the fuzz targets with coverage instrumentation (the flags cargo-fuzz passes, without
/// a sanitizer: the code under test is safe Rust, and a panic is what is looked for) in cargo
/// profile `profile`, writes the seeds, and runs each target for `secs`; one line per target
/// with what it reached.
fn fuzz(secs: u64, only: Option<&str>, profile: &str, seeds: Seeds) -> anyhow::Result<()> {
    let dir = root().join("target/fuzz");
    match seeds {
        // `cargo run -p callguard-tests` alone resolves other features than the workspace's test
        // build, and so builds callguard and its dependencies again (a minute and a half here).
        Seeds::Built => {
            let target =
                std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root().join("target"), PathBuf::from);
            run(Command::new(target.join("release/callguard-fuzz-seeds")).arg(&dir))?;
        }
        Seeds::Build => run(cargo()
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
            .arg(&dir))?,
    }
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

/// Runs `cmd` (in the directory it names, else the current one) and returns what it printed,
/// failing with its stderr.
fn output(cmd: &mut Command) -> anyhow::Result<String> {
    let out = cmd.output().with_context(|| format!("starting {cmd:?}"))?;
    if !out.status.success() {
        bail!("{cmd:?} failed ({}): {}", out.status, String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(String::from_utf8(out.stdout)?)
}

/// Writes `text` gzipped as Debian wants it: best compression, no name or time stamp inside.
fn gzip_to(text: &[u8], to: &Path) -> anyhow::Result<()> {
    use std::io::Write as _;
    let mut child = Command::new("gzip")
        .args(["-9", "-n", "-c"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::fs::File::create(to).with_context(|| format!("creating {}", to.display()))?)
        .spawn()
        .context("starting gzip")?;
    child.stdin.take().context("gzip's input")?.write_all(text)?;
    if !child.wait()?.success() {
        bail!("gzip failed on {}", to.display());
    }
    Ok(())
}

/// Copies `from` (relative to the workspace) to `stage`/`to` with mode `mode`.
fn stage_file(stage: &Path, from: &Path, to: &str, mode: u32) -> anyhow::Result<PathBuf> {
    use std::os::unix::fs::PermissionsExt as _;
    let dest = stage.join(to.trim_start_matches('/'));
    std::fs::create_dir_all(dest.parent().context("a file's directory")?)?;
    std::fs::copy(root().join(from), &dest)
        .with_context(|| format!("copying {} to {}", from.display(), dest.display()))?;
    std::fs::set_permissions(&dest, std::fs::Permissions::from_mode(mode))?;
    Ok(dest)
}

/// Every file under `dir`, relative to it, sorted.
fn files_under(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_owned()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d)? {
            let path = e?.path();
            if path.is_dir() {
                todo.push(path);
            } else {
                out.push(path.strip_prefix(dir)?.to_owned());
            }
        }
    }
    out.sort();
    Ok(out)
}

/// The Debian package: stages its tree under `target/debian/stage`, writes the control files
/// (dependencies from `dpkg-shlibdeps`, checksums, the conffile), and builds it with `dpkg-deb`.
/// Written out rather than with cargo-deb: a staged tree and two Debian tools do the whole job,
/// and CI does not build another cargo subcommand from source.
fn deb(version: Option<String>, out: &Path) -> anyhow::Result<PathBuf> {
    use std::os::unix::fs::PermissionsExt as _;
    let version = version.unwrap_or_else(|| env!("CARGO_PKG_VERSION").to_owned());
    // The whole workspace's binaries, not `-p callguard` alone: cargo unifies dependency features
    // over the packages it builds, so this is the callguard the test suite built and tested (and
    // after `cargo xtask test` it is only a link, where `-p callguard` would rebuild TLS and the
    // daemon with another feature set).
    run(cargo().args([
        "build",
        "--release",
        "--locked",
        "--workspace",
        "--exclude",
        "callguard-ebpf",
        "--bins",
    ]))?;
    let target = root().join("target/debian");
    let stage = target.join("stage");
    if stage.exists() {
        std::fs::remove_dir_all(&stage)?;
    }
    // The binary, without its symbols (lintian: unstripped-binary-or-object).
    let bin = stage.join("usr/bin/callguard");
    std::fs::create_dir_all(bin.parent().context("usr/bin")?)?;
    run(Command::new("strip")
        .args(["--strip-unneeded", "--remove-section=.comment", "--remove-section=.note", "-o"])
        .arg(&bin)
        .arg(root().join("target/release/callguard")))?;
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755))?;
    // Man pages and completions, written by the binary itself from its command-line definition.
    let man = stage.join("usr/share/man/man1");
    let raw = target.join("man");
    if raw.exists() {
        std::fs::remove_dir_all(&raw)?;
    }
    output(Command::new(&bin).arg("man").arg(&raw))?;
    std::fs::create_dir_all(&man)?;
    for page in files_under(&raw)? {
        let name = page.file_name().context("a man page")?.to_string_lossy().into_owned();
        gzip_to(&std::fs::read(raw.join(&page))?, &man.join(format!("{name}.gz")))?;
    }
    for (shell, to) in [
        ("bash", "usr/share/bash-completion/completions/callguard"),
        ("zsh", "usr/share/zsh/vendor-completions/_callguard"),
        ("fish", "usr/share/fish/vendor_completions.d/callguard.fish"),
    ] {
        let script = output(Command::new(&bin).args(["completions", shell]))?;
        let dest = stage.join(to);
        std::fs::create_dir_all(dest.parent().context("a completion's directory")?)?;
        std::fs::write(&dest, script)?;
    }
    stage_file(&stage, Path::new("dist/callguard.toml"), "/etc/callguard/callguard.toml", 0o644)?;
    stage_file(&stage, Path::new("dist/callguard.service"), "/lib/systemd/system/callguard.service", 0o644)?;
    stage_file(
        &stage,
        Path::new("dist/grafana/callguard.json"),
        "/usr/share/callguard/grafana/callguard.json",
        0o644,
    )?;
    let doc = stage.join("usr/share/doc/callguard");
    stage_file(&stage, Path::new("dist/debian/copyright"), "/usr/share/doc/callguard/copyright", 0o644)?;
    gzip_to(&std::fs::read(root().join("README.md"))?, &doc.join("README.md.gz"))?;
    // A native package's changelog: this version, dated now (RFC 5322, as dpkg-parsechangelog
    // reads it).
    let date = output(Command::new("date").args(["-R"]))?;
    let changelog = format!(
        "callguard ({version}) unstable; urgency=medium\n\n  * Built from the callguard repository; \
         see the README's upgrade notes.\n\n -- callguard developers <callguard@example.invalid>  {}\n",
        date.trim()
    );
    gzip_to(changelog.as_bytes(), &doc.join("changelog.gz"))?;
    // Every file and directory root-owned (dpkg-deb --root-owner-group), 0644 / 0755.
    for f in files_under(&stage)? {
        let path = stage.join(&f);
        if path != bin {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644))?;
        }
    }
    let mut dirs = vec![stage.clone()];
    while let Some(d) = dirs.pop() {
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o755))?;
        for e in std::fs::read_dir(&d)? {
            let p = e?.path();
            if p.is_dir() {
                dirs.push(p);
            }
        }
    }
    let payload = files_under(&stage)?;
    // The libraries the binary links, as package dependencies: dpkg-shlibdeps reads them from
    // the ELF file and wants a debian/control to exist where it runs.
    let shlibs = target.join("shlibdeps");
    std::fs::create_dir_all(shlibs.join("debian"))?;
    std::fs::write(
        shlibs.join("debian/control"),
        "Source: callguard\n\nPackage: callguard\nArchitecture: any\n",
    )?;
    let deps = output(Command::new("dpkg-shlibdeps").args(["-O", "-e"]).arg(&bin).current_dir(&shlibs))?;
    let deps = deps
        .lines()
        .find_map(|l| l.strip_prefix("shlibs:Depends="))
        .context("dpkg-shlibdeps named no dependency")?
        .to_owned();
    let arch = output(Command::new("dpkg").arg("--print-architecture"))?.trim().to_owned();
    let size_kib: u64 = payload
        .iter()
        .map(|f| std::fs::metadata(stage.join(f)).map(|m| m.len().div_ceil(1024)))
        .sum::<Result<u64, _>>()?;
    let control_dir = stage.join("DEBIAN");
    std::fs::create_dir_all(&control_dir)?;
    let control = std::fs::read_to_string(root().join("dist/debian/control"))?
        .replace("@VERSION@", &version)
        .replace("@ARCH@", &arch)
        .replace("@SIZE@", &size_kib.to_string())
        .replace("@DEPENDS@", &deps);
    std::fs::write(control_dir.join("control"), control)?;
    std::fs::write(control_dir.join("conffiles"), "/etc/callguard/callguard.toml\n")?;
    let mut md5 = String::new();
    for f in payload.iter().filter(|f| !f.starts_with("etc")) {
        let sum = output(Command::new("md5sum").arg(f).current_dir(&stage))?;
        md5.push_str(&sum);
    }
    std::fs::write(control_dir.join("md5sums"), md5)?;
    for script in ["postinst", "prerm", "postrm"] {
        stage_file(&stage, &Path::new("dist/debian").join(script), &format!("/DEBIAN/{script}"), 0o755)?;
    }
    for f in ["control", "conffiles", "md5sums"] {
        std::fs::set_permissions(control_dir.join(f), std::fs::Permissions::from_mode(0o644))?;
    }
    std::fs::set_permissions(&control_dir, std::fs::Permissions::from_mode(0o755))?;
    let out = if out.is_absolute() { out.to_owned() } else { root().join(out) };
    std::fs::create_dir_all(&out)?;
    let deb = out.join(format!("callguard_{version}_{arch}.deb"));
    run(Command::new("dpkg-deb").args(["--root-owner-group", "-Zxz", "--build"]).arg(&stage).arg(&deb))?;
    for f in &payload {
        println!("/{}", f.display());
    }
    println!("{} ({} files, {size_kib} KiB installed)", deb.display(), payload.len());
    Ok(deb)
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
            if whole && !no_fuzz { fuzz(10, None, "fuzz", Seeds::Built) } else { Ok(()) }
        }
        Task::Fuzz { secs, target } => {
            setup()?;
            fuzz(secs, target.as_deref(), "release", Seeds::Build)
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
        Task::Deb { version, out } => {
            setup()?;
            deb(version, &out).map(|_| ())
        }
    }
}
