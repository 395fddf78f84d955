//! The Debian package as an operator's configuration management uses it: built by
//! `cargo xtask deb`, checked by lintian, then installed, reinstalled, upgraded, removed and
//! purged by dpkg in a throwaway root (`dpkg --root`). The maintainer scripts run outside that
//! root with `DPKG_ROOT` set (`--force-script-chrootless`), as they do when an image is built,
//! and must touch nothing but the root. The root's dpkg database knows no libc, so dependencies
//! are forced; lintian checks that they are declared.

use std::{
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
};

/// The workspace's version: the package's by default.
const VERSION: &str = env!("CARGO_PKG_VERSION");

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests live in the workspace").to_owned()
}

/// `cargo xtask deb --version version --out out`: the package's path.
fn build(version: &str, out: &Path) -> PathBuf {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let done = Command::new(cargo)
        .args(["xtask", "deb", "--version", version, "--out"])
        .arg(out)
        .current_dir(workspace())
        .stdin(Stdio::null())
        .output()
        .expect("running cargo xtask deb");
    assert!(done.status.success(), "cargo xtask deb failed:\n{}", text(&done));
    let arch = Command::new("dpkg").arg("--print-architecture").output().expect("dpkg --print-architecture");
    let arch = String::from_utf8_lossy(&arch.stdout).trim().to_owned();
    let deb = out.join(format!("callguard_{version}_{arch}.deb"));
    assert!(deb.exists(), "no {} after:\n{}", deb.display(), text(&done));
    deb
}

/// A throwaway root with an empty dpkg database, and a directory of stand-ins for the commands
/// that act on the running system (`systemctl`, `deb-systemd-helper`, `deb-systemd-invoke`,
/// `callguard`), first on dpkg's PATH: each writes its name into `touched` if a maintainer
/// script calls it, which under `dpkg --root` none may.
struct Root(tempfile::TempDir, tempfile::TempDir);

impl Root {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("temporary root");
        for d in ["var/lib/dpkg/info", "var/lib/dpkg/updates", "var/log"] {
            std::fs::create_dir_all(dir.path().join(d)).expect("dpkg's directories");
        }
        std::fs::write(dir.path().join("var/lib/dpkg/status"), "").expect("dpkg's status file");
        let stubs = tempfile::tempdir().expect("stand-ins");
        for cmd in ["systemctl", "deb-systemd-helper", "deb-systemd-invoke", "callguard"] {
            let path = stubs.path().join(cmd);
            let touched = stubs.path().join("touched");
            std::fs::write(&path, format!("#!/bin/sh\necho \"{cmd} $*\" >> {}\n", touched.display()))
                .unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        Self(dir, stubs)
    }

    /// What the maintainer scripts ran of the commands that act on the running system.
    fn touched(&self) -> String {
        std::fs::read_to_string(self.1.path().join("touched")).unwrap_or_default()
    }

    fn path(&self, p: &str) -> PathBuf {
        self.0.path().join(p.trim_start_matches('/'))
    }

    /// dpkg on this root, with nothing on its input: a question (a conffile prompt) fails it.
    fn dpkg(&self, args: &[&str]) -> String {
        let path = format!("{}:{}", self.1.path().display(), std::env::var("PATH").unwrap_or_default());
        let out = Command::new("dpkg")
            .env("PATH", path)
            .arg(format!("--root={}", self.0.path().display()))
            .args(["--force-script-chrootless", "--force-depends"])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("running dpkg");
        assert!(out.status.success(), "dpkg {args:?} failed:\n{}", text(&out));
        text(&out)
    }

    /// What dpkg knows of the package: "Status Version", or None when it knows nothing.
    fn state(&self) -> Option<String> {
        let out = Command::new("dpkg-query")
            .arg(format!("--admindir={}", self.path("var/lib/dpkg").display()))
            .args(["-W", "-f", "${Status} ${Version}", "callguard"])
            .output()
            .expect("running dpkg-query");
        out.status.success().then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

#[test]
fn the_package_installs_upgrades_and_removes_cleanly_and_lintian_accepts_it() {
    let out = tempfile::tempdir().expect("output directory");
    let first = build(VERSION, out.path());
    let next_version = format!("{VERSION}+upgrade1");
    let next = build(&next_version, out.path());

    // What the package holds, as root's, with the modes an operator expects.
    let listing = Command::new("dpkg-deb").arg("-c").arg(&first).output().expect("dpkg-deb -c");
    let listing = text(&listing);
    println!("{listing}");
    for path in [
        "./usr/bin/callguard",
        "./lib/systemd/system/callguard.service",
        "./etc/callguard/callguard.toml",
        "./usr/share/man/man1/callguard.1.gz",
        "./usr/share/man/man1/callguard-net-deny.1.gz",
        "./usr/share/bash-completion/completions/callguard",
        "./usr/share/zsh/vendor-completions/_callguard",
        "./usr/share/fish/vendor_completions.d/callguard.fish",
        "./usr/share/callguard/grafana/callguard.json",
        "./usr/share/doc/callguard/copyright",
    ] {
        let line = listing.lines().find(|l| l.ends_with(&format!(" {path}")));
        let line = line.unwrap_or_else(|| panic!("{path} is not in the package:\n{listing}"));
        assert!(line.contains(" root/root "), "{path} is not root's: {line}");
        let mode =
            if path.ends_with("/callguard") && path.contains("/bin/") { "-rwxr-xr-x" } else { "-rw-r--r--" };
        assert!(line.starts_with(mode), "{path} should be {mode}: {line}");
    }
    let fields = Command::new("dpkg-deb").args(["-f"]).arg(&first).args(["Depends", "Version"]).output();
    let fields = text(&fields.expect("dpkg-deb -f"));
    assert!(fields.contains("libc6 (>= "), "the C library is not a declared dependency:\n{fields}");
    assert!(fields.contains(&format!("Version: {VERSION}")), "{fields}");

    // Debian's own checker: no error and no warning.
    let lintian = Command::new("lintian")
        .args(["--fail-on", "error,warning", "--info"])
        .arg(&first)
        .output()
        .expect("running lintian");
    println!("lintian:\n{}", text(&lintian));
    assert!(lintian.status.success(), "lintian refused the package:\n{}", text(&lintian));

    // A fresh install: the files are there, the first-install advice is printed, the state
    // directory is root's alone, and the installed binary accepts the installed configuration.
    let root = Root::new();
    let said = root.dpkg(&["-i", first.to_str().expect("path")]);
    assert_eq!(root.state().as_deref(), Some(format!("install ok installed {VERSION}").as_str()), "{said}");
    assert!(said.contains("systemctl enable --now callguard"), "no first-install advice:\n{said}");
    let bin = root.path("usr/bin/callguard");
    let version = Command::new(&bin).arg("--version").output().expect("the installed binary");
    assert_eq!(text(&version).trim(), format!("callguard {VERSION}"));
    let config = root.path("etc/callguard/callguard.toml");
    let check =
        Command::new(&bin).arg("-c").arg(&config).args(["config", "check"]).output().expect("config check");
    assert!(
        check.status.success(),
        "the shipped configuration does not pass its own check:\n{}",
        text(&check)
    );
    let state = std::fs::metadata(root.path("var/lib/callguard")).expect("the state directory");
    assert_eq!(state.permissions().mode() & 0o777, 0o700, "the state directory is not root's alone");
    let unit = std::fs::read_to_string(root.path("lib/systemd/system/callguard.service")).expect("the unit");
    let exec = unit.lines().find_map(|l| l.strip_prefix("ExecStart=")).expect("the unit's ExecStart");
    let started = exec.split_whitespace().next().expect("a program");
    assert!(root.path(started).exists(), "the unit starts {started}, which the package does not install");
    // The shell completion as bash uses it: "callguard ne<Tab>" completes to "net".
    let completion = root.path("usr/share/bash-completion/completions/callguard");
    let bash = Command::new("bash")
        .arg("-c")
        .arg(format!(
            "source {}; COMP_WORDS=(callguard ne); COMP_CWORD=1; COMP_LINE='callguard ne'; COMP_POINT=12; \
             _callguard callguard ne callguard; echo \"${{COMPREPLY[@]}}\"",
            completion.display()
        ))
        .output()
        .expect("bash");
    assert_eq!(text(&bash).trim(), "net", "bash's completion of `callguard ne`");

    // The operator edits the configuration, and the daemon has written its database.
    let edited = format!("{}\n# the operator's edit\n", std::fs::read_to_string(&config).expect("config"));
    std::fs::write(&config, &edited).expect("editing the configuration");
    let database = root.path("var/lib/callguard/callguard.db");
    std::fs::write(&database, b"SQLite format 3\0 the operator's rules").expect("a database");

    // Reinstalling and upgrading ask nothing, keep the edit and the database, and give no
    // first-install advice.
    for (deb, version) in [(&first, VERSION), (&next, next_version.as_str())] {
        let said = root.dpkg(&["-i", deb.to_str().expect("path")]);
        assert_eq!(root.state(), Some(format!("install ok installed {version}")), "{said}");
        assert!(!said.contains("systemctl enable --now"), "advice on an upgrade:\n{said}");
        assert_eq!(std::fs::read_to_string(&config).expect("config"), edited, "the edit was lost:\n{said}");
        assert!(database.exists(), "the database went with an upgrade to {version}");
    }
    let version = Command::new(&bin).arg("--version").output().expect("the upgraded binary");
    assert!(text(&version).starts_with("callguard "), "{}", text(&version));

    // Removing takes the program and keeps the configuration and the database.
    let said = root.dpkg(&["-r", "callguard"]);
    assert_eq!(root.state(), Some(format!("deinstall ok config-files {next_version}")), "{said}");
    assert!(!bin.exists(), "the binary outlived dpkg -r");
    assert!(!root.path("lib/systemd/system/callguard.service").exists(), "the unit outlived dpkg -r");
    assert_eq!(std::fs::read_to_string(&config).expect("config after dpkg -r"), edited);
    assert!(database.exists(), "dpkg -r removed the database");

    // Purging removes them too, and dpkg forgets the package.
    let said = root.dpkg(&["--purge", "callguard"]);
    assert_eq!(root.state(), None, "dpkg still knows callguard after --purge:\n{said}");
    assert!(!root.path("etc/callguard").exists(), "/etc/callguard outlived --purge");
    assert!(!root.path("var/lib/callguard").exists(), "/var/lib/callguard outlived --purge");
    let left: Vec<_> =
        ["usr/share/callguard", "usr/share/doc/callguard", "usr/share/man/man1/callguard.1.gz"]
            .into_iter()
            .filter(|p| root.path(p).exists())
            .collect();
    assert!(left.is_empty(), "left behind by --purge: {left:?}");
    assert_eq!(root.touched(), "", "a maintainer script acted on the running system under dpkg --root");
}
