//! Test hosts in network namespaces, joined by a veth pair, with every resource released on drop
//! (also when the test panics): namespaces, the daemon process, pinned objects.
//!
//! Addresses come from the benchmarking range 198.18.0.0/15 and the documentation range
//! 2001:db8::/32, and live only inside the namespaces the test made; no packet leaves them.

use std::{
    fs::File,
    net::{IpAddr, SocketAddr, TcpListener, UdpSocket},
    os::fd::AsRawFd as _,
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    time::{Duration, Instant},
};

use crate::unique;

/// Runs a command, panicking with its output when it fails.
pub fn sh(args: &[&str]) -> Output {
    let out = Command::new(args[0]).args(&args[1..]).output().unwrap_or_else(|e| panic!("{args:?}: {e}"));
    assert!(out.status.success(), "{args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    out
}

/// A network namespace, deleted on drop.
#[derive(Debug)]
pub struct Netns {
    /// Its name under /run/netns.
    pub name: String,
}

impl Netns {
    /// Creates a namespace with `lo` up.
    pub fn new(prefix: &str) -> Self {
        crate::sweep_stale_once();
        let name = unique(prefix);
        sh(&["ip", "netns", "add", &name]);
        let ns = Self { name };
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    /// `ip -n <ns> …`
    pub fn ip(&self, args: &[&str]) -> Output {
        let mut v = vec!["ip", "-n", &self.name];
        v.extend_from_slice(args);
        sh(&v)
    }

    /// Runs `f` on a thread that has entered this namespace. Sockets created there stay in the
    /// namespace when handed back.
    pub fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let name = self.name.clone();
        std::thread::spawn(move || {
            enter(&name);
            f()
        })
        .join()
        .expect("namespace thread panicked")
    }

    /// `ip netns exec <ns> <args>` run to completion, whatever its outcome.
    pub fn exec(&self, args: &[&str]) -> Output {
        Command::new("ip")
            .args(["netns", "exec", &self.name])
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("{args:?} in {}: {e}", self.name))
    }

    /// Starts `args` in this namespace, stdout and stderr to `log`; killed when the handle drops.
    pub fn spawn(&self, args: &[&str], log: &Path) -> Spawned {
        let out = File::create(log).unwrap_or_else(|e| panic!("{}: {e}", log.display()));
        let child = Command::new("ip")
            .args(["netns", "exec", &self.name])
            .args(args)
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("log fd"))
            .stderr(out)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {args:?}: {e}"));
        Spawned { child: Some(child), log: log.to_owned() }
    }

    /// Loads an nftables ruleset (`nft -f -`) into this namespace.
    pub fn nft(&self, ruleset: &str) {
        let mut nft = Command::new("ip");
        nft.args(["netns", "exec", &self.name, "nft", "-f", "-"]);
        let out = with_stdin(nft, ruleset, "nft (Debian package nftables)");
        assert!(out.status.success(), "nft: {}\n{ruleset}", String::from_utf8_lossy(&out.stderr));
    }

    /// Packets counted by the named nftables counter `name` of table `inet <table>`.
    pub fn nft_counter(&self, table: &str, name: &str) -> u64 {
        let out = self.exec(&["nft", "-j", "list", "counter", "inet", table, name]);
        assert!(out.status.success(), "nft list counter {name}: {}", String::from_utf8_lossy(&out.stderr));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("nft json");
        v["nftables"]
            .as_array()
            .and_then(|items| items.iter().find_map(|i| i["counter"]["packets"].as_u64()))
            .unwrap_or_else(|| panic!("no counter {name} in {v}"))
    }

    /// A UDP socket bound to `addr` inside this namespace. A port a test has just closed may
    /// still be held for a moment by a child another test thread is starting (the socket is
    /// close-on-exec: the forked child holds it until it runs its program), so a bind that finds
    /// the port in use is tried again for up to two seconds.
    pub fn udp(&self, addr: SocketAddr) -> UdpSocket {
        self.run(move || {
            let deadline = Instant::now() + Duration::from_secs(2);
            loop {
                match UdpSocket::bind(addr) {
                    Ok(sock) => return sock,
                    Err(e) if e.kind() == std::io::ErrorKind::AddrInUse && Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_millis(10));
                    }
                    Err(e) => panic!("bind {addr}: {e}"),
                }
            }
        })
    }

    /// Sends `packet`, a whole IP packet with its header (built with [`crate::frame::Frame`]), from
    /// this namespace through a raw socket: sources, extension headers and fragments as written.
    pub fn send_ip(&self, packet: Vec<u8>, dst: IpAddr) {
        self.run(move || {
            let domain = if dst.is_ipv4() { socket2::Domain::IPV4 } else { socket2::Domain::IPV6 };
            // IPPROTO_RAW: the packet carries its own IP header (IPv4 and IPv6 alike).
            let s = socket2::Socket::new(domain, socket2::Type::RAW, Some(libc::IPPROTO_RAW.into()))
                .expect("raw socket");
            s.send_to(&packet, &SocketAddr::new(dst, 0).into())
                .unwrap_or_else(|e| panic!("send to {dst}: {e}"));
        });
    }

    /// Sends `packets` as [`Netns::send_ip`] does, from one socket, pausing a millisecond after
    /// every 128 so that the receiving veth's XDP ring (256 frames) is not overrun: a frame it
    /// drops would never reach callguard.
    pub fn send_ip_many(&self, packets: Vec<Vec<u8>>, dst: IpAddr) {
        self.run(move || {
            let domain = if dst.is_ipv4() { socket2::Domain::IPV4 } else { socket2::Domain::IPV6 };
            let s = socket2::Socket::new(domain, socket2::Type::RAW, Some(libc::IPPROTO_RAW.into()))
                .expect("raw socket");
            for (k, packet) in packets.iter().enumerate() {
                s.send_to(packet, &SocketAddr::new(dst, 0).into())
                    .unwrap_or_else(|e| panic!("send to {dst}: {e}"));
                if k % 128 == 127 {
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
        });
    }

    /// A TCP listener bound to `addr` inside this namespace.
    pub fn tcp_listener(&self, addr: SocketAddr) -> TcpListener {
        self.run(move || TcpListener::bind(addr).unwrap_or_else(|e| panic!("bind {addr}: {e}")))
    }

    /// Connects from `src` to `dst` inside this namespace; `true` when the handshake completes
    /// within `timeout` (shorter than the first SYN retransmission, so exactly one SYN is sent).
    pub fn tcp_connects(&self, src: IpAddr, dst: SocketAddr, timeout: Duration) -> bool {
        self.run(move || {
            let sock = if dst.is_ipv4() { libc::AF_INET } else { libc::AF_INET6 };
            // std has no bind-before-connect: build the socket with libc.
            // SAFETY: plain socket syscalls on a descriptor we own and close.
            unsafe {
                let fd = libc::socket(sock, libc::SOCK_STREAM | libc::SOCK_NONBLOCK, 0);
                assert!(fd >= 0);
                let (sa, len) = sockaddr(SocketAddr::new(src, 0));
                assert_eq!(libc::bind(fd, (&raw const sa).cast(), len), 0, "bind {src}");
                let (da, dlen) = sockaddr(dst);
                libc::connect(fd, (&raw const da).cast(), dlen);
                let mut pfd = libc::pollfd { fd, events: libc::POLLOUT, revents: 0 };
                let n = libc::poll(&raw mut pfd, 1, timeout.as_millis() as i32);
                let mut err: libc::c_int = 0;
                let mut elen = size_of::<libc::c_int>() as libc::socklen_t;
                libc::getsockopt(fd, libc::SOL_SOCKET, libc::SO_ERROR, (&raw mut err).cast(), &raw mut elen);
                libc::close(fd);
                n == 1 && err == 0
            }
        })
    }
}

fn sockaddr(addr: SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: an all-zero sockaddr_storage is valid; we fill the family-specific prefix.
    let mut ss: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    match addr {
        SocketAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as u16,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr { s_addr: u32::from_ne_bytes(a.ip().octets()) },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_storage is larger than sockaddr_in and suitably aligned.
            unsafe { std::ptr::write((&raw mut ss).cast(), sin) };
            (ss, size_of::<libc::sockaddr_in>() as u32)
        }
        SocketAddr::V6(a) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as u16,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: 0,
                sin6_addr: libc::in6_addr { s6_addr: a.ip().octets() },
                sin6_scope_id: 0,
            };
            // SAFETY: as above, for sockaddr_in6.
            unsafe { std::ptr::write((&raw mut ss).cast(), sin6) };
            (ss, size_of::<libc::sockaddr_in6>() as u32)
        }
    }
}

/// Runs `cmd` with `input` on its standard input; its output and error are captured.
pub fn with_stdin(mut cmd: Command, input: &str, what: &str) -> Output {
    use std::io::Write as _;
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("starting {what}: {e}"));
    child.stdin.take().expect("stdin").write_all(input.as_bytes()).expect("writing stdin");
    child.wait_with_output().unwrap_or_else(|e| panic!("running {what}: {e}"))
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "delete", &self.name]).status();
    }
}

/// Two hosts: `pbx` (guarded by callguard, 198.18.0.1 and 2001:db8::1) and `peer`
/// (198.18.0.2 and 2001:db8::2, plus the extra sources in [`Topology::SOURCES_V4`] and
/// [`Topology::SOURCES_V6`]), joined by a veth pair.
#[derive(Debug)]
pub struct Topology {
    /// The protected host.
    pub pbx: Netns,
    /// The traffic source.
    pub peer: Netns,
    /// The pbx side of the veth pair (where XDP attaches).
    pub pbx_if: String,
    /// The peer side.
    pub peer_if: String,
}

impl Topology {
    /// The PBX's IPv4 address.
    pub const PBX_V4: &str = "198.18.0.1";
    /// The PBX's IPv6 address.
    pub const PBX_V6: &str = "2001:db8::1";
    /// Extra IPv4 sources on the peer.
    pub const SOURCES_V4: [&str; 4] = ["198.18.0.10", "198.18.0.11", "198.18.0.12", "198.18.0.13"];
    /// Extra IPv6 sources on the peer.
    pub const SOURCES_V6: [&str; 3] = ["2001:db8::10", "2001:db8::11", "2001:db8::12"];

    /// Creates both namespaces and the veth pair, with addresses up and IPv6 ready.
    pub fn new() -> Self {
        let pbx = Netns::new("cg-pbx");
        let peer = Netns::new("cg-peer");
        let (pbx_if, peer_if) = veth(&pbx, &peer);
        pbx.ip(&["addr", "add", "198.18.0.1/24", "dev", &pbx_if]);
        pbx.ip(&["addr", "add", "2001:db8::1/64", "dev", &pbx_if, "nodad"]);
        peer.ip(&["addr", "add", "198.18.0.2/24", "dev", &peer_if]);
        peer.ip(&["addr", "add", "2001:db8::2/64", "dev", &peer_if, "nodad"]);
        for a in Self::SOURCES_V4 {
            peer.ip(&["addr", "add", &format!("{a}/24"), "dev", &peer_if]);
        }
        for a in Self::SOURCES_V6 {
            peer.ip(&["addr", "add", &format!("{a}/64"), "dev", &peer_if, "nodad"]);
        }
        pbx.ip(&["link", "set", &pbx_if, "up"]);
        peer.ip(&["link", "set", &peer_if, "up"]);
        Self { pbx, peer, pbx_if, peer_if }
    }
}

/// Moves the calling thread into the network namespace `name` (for threads of their own, such
/// as parallel clients; [`Netns::run`] does this for one closure).
pub fn enter(name: &str) {
    let path = format!("/run/netns/{name}");
    let file = File::open(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    // SAFETY: setns on a namespace fd we own; it changes only the calling thread.
    let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(rc, 0, "setns {path}: {}", std::io::Error::last_os_error());
}

/// Joins `a` and `b` with a veth pair (uniquely named, left down); returns the name of the end
/// in `a` and of the end in `b`. The pair goes away with either namespace.
pub fn veth(a: &Netns, b: &Netns) -> (String, String) {
    let tag = unique("v").replace('-', "");
    let tag = &tag[tag.len().saturating_sub(9)..];
    let (a_if, b_if) = (format!("cgp{tag}"), format!("cga{tag}"));
    sh(&[
        "ip", "link", "add", &a_if, "netns", &a.name, "type", "veth", "peer", "name", &b_if, "netns", &b.name,
    ]);
    (a_if, b_if)
}

impl Default for Topology {
    fn default() -> Self {
        Self::new()
    }
}

/// Paths of one daemon instance: config file, socket, database, pin directory. The pin
/// directory is removed (everything detached) on drop.
#[derive(Debug)]
pub struct Instance {
    /// Private directory for the config file, socket and database.
    pub dir: tempfile::TempDir,
    /// The pin directory under /sys/fs/bpf.
    pub pin_dir: PathBuf,
    /// The configuration file.
    pub config: PathBuf,
    /// The namespace the daemon runs in.
    pub netns: String,
}

impl Instance {
    /// Writes a configuration guarding `iface`, with `extra` TOML appended.
    pub fn new(netns: &Netns, iface: &str, extra: &str) -> Self {
        Self::guarding(netns, &[iface], extra)
    }

    /// Writes a configuration guarding every interface of `ifaces`, with `extra` TOML appended.
    pub fn guarding(netns: &Netns, ifaces: &[&str], extra: &str) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let pin_dir = PathBuf::from("/sys/fs/bpf").join(unique("callguard-it"));
        let config = dir.path().join("callguard.toml");
        let text = format!(
            "interfaces = {ifaces:?}\npin_dir = \"{}\"\nsocket = \"{}\"\ndatabase = \"{}\"\nsweep_interval_secs = 1\n{extra}",
            pin_dir.display(),
            dir.path().join("callguard.sock").display(),
            dir.path().join("rules.db").display(),
        );
        std::fs::write(&config, text).expect("writing config");
        // Root's alone, as the daemon requires of a file that holds the administrator's password.
        std::fs::set_permissions(&config, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .expect("chmod config");
        Self { dir, pin_dir, config, netns: netns.name.clone() }
    }

    /// Another instance in the same namespace on the same pin directory, with a directory,
    /// configuration, store and socket of its own.
    pub fn sharing_pins(&self) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = dir.path().join("callguard.toml");
        let text = std::fs::read_to_string(&self.config)
            .expect("reading config")
            .replace(&self.dir.path().display().to_string(), &dir.path().display().to_string());
        std::fs::write(&config, text).expect("writing config");
        std::fs::set_permissions(&config, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .expect("chmod config");
        Self { dir, pin_dir: self.pin_dir.clone(), config, netns: self.netns.clone() }
    }

    /// Starts `callguard run` without waiting for it to come up: for a daemon that should not.
    pub fn spawn_run(&self) -> Spawned {
        let log = self.dir.path().join(format!("daemon-{}.log", unique("run")));
        let file = File::create(&log).expect("log file");
        let child = self
            .command(&["run"])
            .env("CALLGUARD_LOG", "info")
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("log file"))
            .stderr(file)
            .spawn()
            .expect("starting callguard run");
        Spawned { child: Some(child), log }
    }

    /// `callguard -c <config> <args>` run to completion in the namespace; returns stdout.
    /// Panics with stderr when it fails.
    pub fn cli(&self, args: &[&str]) -> String {
        let out = self.cli_output(args);
        assert!(out.status.success(), "callguard {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `callguard -c <config> <args>`, whatever its outcome.
    pub fn cli_output(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("running callguard")
    }

    /// `callguard -c <config> <args>` with `input` on its standard input; returns stdout.
    /// Panics with stderr when it fails.
    pub fn cli_input(&self, args: &[&str], input: &str) -> String {
        let out = with_stdin(self.command(args), input, "callguard");
        assert!(out.status.success(), "callguard {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn command(&self, args: &[&str]) -> Command {
        self.command_via(&[], args)
    }

    /// `callguard <args>` in the namespace, started through `wrapper` (a program and its
    /// arguments that ends by running the rest of its command line, as `setpriv` does).
    fn command_via(&self, wrapper: &[&str], args: &[&str]) -> Command {
        let mut c = Command::new("nsenter");
        c.arg(format!("--net=/run/netns/{}", self.netns))
            .args(wrapper)
            .arg(binary())
            .arg("-c")
            .arg(&self.config)
            .args(args)
            .env("CALLGUARD_LOG", "warn");
        c
    }

    /// Starts `callguard run` and waits until its control socket answers.
    pub fn start(&self) -> Daemon {
        self.start_via(&[])
    }

    /// Starts `callguard run` through `wrapper` (see [`Instance::command_via`]: `setpriv` with
    /// the systemd unit's capabilities, say) and waits until its control socket answers.
    pub fn start_via(&self, wrapper: &[&str]) -> Daemon {
        let log = self.dir.path().join(format!("daemon-{}.log", unique("run")));
        let file = File::create(&log).expect("log file");
        let child = self
            .command_via(wrapper, &["run"])
            .env("CALLGUARD_LOG", "info")
            .stdout(file.try_clone().expect("log file"))
            .stderr(file)
            .spawn()
            .expect("starting callguard run");
        let mut d = Daemon { child, log };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if self.cli_output(&["status", "--json"]).status.success() {
                return d;
            }
            if let Ok(Some(status)) = d.child.try_wait() {
                panic!("callguard run exited with {status}: {}", d.log());
            }
            assert!(Instant::now() < deadline, "callguard run did not come up: {}", d.log());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The counters as `callguard stats --json` prints them.
    pub fn stats(&self) -> serde_json::Value {
        serde_json::from_str(&self.cli(&["stats", "--json"])).expect("stats json")
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        if let Err(e) = callguard::kernel::detach_all(&self.pin_dir) {
            eprintln!("cleanup of {}: {e:#}", self.pin_dir.display());
        }
    }
}

/// A running daemon, killed on drop.
#[derive(Debug)]
pub struct Daemon {
    child: Child,
    log: PathBuf,
}

impl Daemon {
    /// The daemon's process id (wrappers such as `nsenter` and `setpriv` exec it in place).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Stops with SIGTERM and waits.
    pub fn stop(mut self) {
        // SAFETY: kill on our own child's pid.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
    }

    /// Kills with SIGKILL (no cleanup at all) and waits.
    pub fn kill9(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// What the daemon logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The log file.
    pub fn log_path(&self) -> &Path {
        &self.log
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A process started with [`Netns::spawn`], killed (if still running) on drop.
#[derive(Debug)]
pub struct Spawned {
    child: Option<Child>,
    log: PathBuf,
}

impl Spawned {
    /// Waits for the process to exit within `timeout` (killing it after); returns whether it
    /// exited successfully on its own, and what it printed.
    pub fn wait(mut self, timeout: Duration) -> (bool, String) {
        let mut child = self.child.take().expect("not yet waited for");
        let deadline = Instant::now() + timeout;
        let ok = loop {
            if let Some(status) = child.try_wait().expect("waiting") {
                break status.success();
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                break false;
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        (ok, self.output())
    }

    /// What the process printed so far.
    pub fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Proves `src` (an address of `ns`) real to the callguard guarding `pbx`, as a SIP phone would:
/// an INVITE from `src`:5090 dialing `barred` (a number the daemon refuses), then the ACK to its
/// `403`, carrying the 403's To tag. Panics when no 403 comes back.
pub fn acknowledge_a_403(ns: &Netns, src: &str, pbx: &str, barred: &str) {
    let sock = ns.udp(format!("{src}:5090").parse().expect("address"));
    let head = |method: &str, to_tag: &str| {
        format!(
            "{method} sip:{barred}@{pbx} SIP/2.0\r\nVia: SIP/2.0/UDP {src}:5090;branch=z9hG4bKprove\r\n\
             Max-Forwards: 70\r\nFrom: <sip:101@tenant.example>;tag=p1\r\nTo: <sip:{barred}@{pbx}>{to_tag}\r\n\
             Call-ID: prove@{src}\r\nCSeq: 1 {method}\r\nContact: <sip:101@{src}:5090>\r\n\
             User-Agent: callguard-tests phone\r\nContent-Length: 0\r\n\r\n"
        )
    };
    // (Contact and User-Agent as a phone sends them: callguard never answers with more bytes
    // than it was sent.)
    sock.send_to(head("INVITE", "").as_bytes(), format!("{pbx}:5060")).expect("send");
    sock.set_read_timeout(Some(Duration::from_secs(2))).expect("timeout");
    let mut buf = [0u8; 2048];
    let n = sock.recv(&mut buf).unwrap_or_else(|e| panic!("no 403 for {src}: {e}"));
    let answer = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert!(answer.starts_with("SIP/2.0 403"), "{answer}");
    let tag = answer
        .lines()
        .find_map(|l| l.strip_prefix("To: ")?.split(";tag=").nth(1).map(str::trim))
        .unwrap_or_else(|| panic!("a 403 without a To tag: {answer}"));
    sock.send_to(head("ACK", &format!(";tag={tag}")).as_bytes(), format!("{pbx}:5060")).expect("send");
}

/// The `callguard` binary built for these tests: beside the running executable (the demo and
/// bench binaries) or one directory up (test executables live in `deps/`).
pub fn binary() -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let dir = exe.parent().expect("executable directory");
    [Some(dir), dir.parent()]
        .into_iter()
        .flatten()
        .map(|d| d.join("callguard-under-test"))
        .find(|p| p.exists())
        .unwrap_or_else(|| panic!("callguard-under-test is not built next to {}", exe.display()))
}

/// Packets counted for (action, reason) in `callguard stats --json` output.
pub fn reason_packets(stats: &serde_json::Value, action: &str, reason: &str) -> u64 {
    stats["reasons"]
        .as_array()
        .expect("reasons")
        .iter()
        .find(|r| r["action"] == action && r["reason"] == reason)
        .map_or(0, |r| r["packets"].as_u64().unwrap_or(0))
}

/// A column of SIPp's statistics file (`-trace_stat`), last row.
pub fn sipp_stat(csv: &str, column: &str) -> u64 {
    let mut lines = csv.lines().filter(|l| !l.trim().is_empty());
    let head: Vec<&str> = lines.next().expect("csv header").split(';').collect();
    let last: Vec<&str> = lines.next_back().expect("csv row").split(';').collect();
    let i = head.iter().position(|h| *h == column).unwrap_or_else(|| panic!("no column {column}"));
    last[i].parse().unwrap_or_else(|_| panic!("{column} = {:?}", last[i]))
}

/// Kamailio (Debian's `kamailio`) running in a namespace with one of the configurations in
/// `tests/kamailio/`, listening on one UDP address; stopped (SIGTERM, then waited for) when
/// dropped.
#[derive(Debug)]
pub struct Kamailio {
    dir: tempfile::TempDir,
    pid: PathBuf,
    _proc: Spawned,
}

impl Kamailio {
    /// Starts Kamailio in `ns` with `tests/kamailio/<config>`, listening on `listen` (UDP).
    pub fn start(ns: &Netns, config: &str, listen: &str) -> Self {
        Self::start_with(ns, config, listen, &[])
    }

    /// [`Kamailio::start`], with `-A NAME=VALUE` for each of `defines` (the config's `#!define`s
    /// from the command line).
    pub fn start_with(ns: &Netns, config: &str, listen: &str, defines: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let pid = dir.path().join("kamailio.pid");
        let cfg = Path::new(env!("CARGO_MANIFEST_DIR")).join("kamailio").join(config);
        let listen = format!("udp:{listen}");
        let mut args = vec![
            "kamailio",
            "-f",
            cfg.to_str().expect("path"),
            "-l",
            &listen,
            "-DD",
            "-E",
            "-Y",
            dir.path().to_str().expect("path"),
            "-P",
            pid.to_str().expect("path"),
            "-m",
            "32",
            "-M",
            "8",
        ];
        let defines: Vec<String> = defines.iter().map(|(k, v)| format!("{k}={v}")).collect();
        for d in &defines {
            args.extend(["-A", d.as_str()]);
        }
        let proc = ns.spawn(&args, &dir.path().join("kamailio.log"));
        Self { dir, pid, _proc: proc }
    }

    /// The process ids of Kamailio's main process and of its children.
    pub fn pids(&self) -> Vec<u32> {
        let Some(main) = std::fs::read_to_string(&self.pid).ok().and_then(|p| p.trim().parse::<u32>().ok())
        else {
            return Vec::new();
        };
        let mut pids = vec![main];
        for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else { continue };
            let stat = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
            // Fields after the command (which may hold spaces): state, ppid, …
            let ppid = stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().nth(1));
            if ppid.and_then(|p| p.parse::<u32>().ok()) == Some(main) {
                pids.push(pid);
            }
        }
        pids
    }

    /// User and system CPU time Kamailio's processes have used so far.
    pub fn cpu(&self) -> Duration {
        // SAFETY: sysconf has no preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
        let ticks: u64 = self
            .pids()
            .iter()
            .map(|p| {
                let stat = std::fs::read_to_string(format!("/proc/{p}/stat")).unwrap_or_default();
                let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
                // utime and stime: fields 14 and 15 of stat(5); the state, field 3, comes first
                // after the command.
                let f: Vec<&str> = rest.split_whitespace().collect();
                let field = |n: usize| f.get(n - 3).and_then(|x| x.parse::<u64>().ok()).unwrap_or(0);
                field(14) + field(15)
            })
            .sum();
        Duration::from_nanos(ticks * 1_000_000_000 / hz)
    }

    /// What Kamailio logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("kamailio.log")).unwrap_or_default()
    }
}

impl Drop for Kamailio {
    fn drop(&mut self) {
        // Its children too: a busy child that outlives the main process would take CPU from
        // whatever runs next (the flood benchmark's next filter).
        let pids = self.pids();
        let Some(&main) = pids.first() else { return };
        // SAFETY: a plain kill(2) of the process this test started.
        unsafe { libc::kill(main as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(3);
        let alive = |pids: &[u32]| pids.iter().any(|p| Path::new(&format!("/proc/{p}")).exists());
        while alive(&pids) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        for p in pids {
            // SAFETY: as above; a pid already gone makes kill fail, which is fine.
            unsafe { libc::kill(p as i32, libc::SIGKILL) };
        }
    }
}
