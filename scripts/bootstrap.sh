#!/usr/bin/env bash
# Installs what building and testing callguard needs, and only what is missing:
#   - Debian packages: llvm-22-dev (bpf-linker links against it), iproute2 (namespaces, veth),
#     python3 and python3-venv (sipvicious), sip-tester (SIPp: the SIP server and the caller in
#     the scanner test), nftables (independent packet counters in the test namespaces), kamailio
#     (the reference PBX of the attack suite: tests/kamailio), iptables and ipset (the flood
#     benchmark's netfilter peers), xdp-tools (its xdp-filter peer), fonts-dejavu-core (the
#     font of the benchmark's plots), prometheus (its promtool checks the metrics), curl
#     (the metrics test's scraper), tmux (the terminal `callguard top` is tested in), and
#     dpkg-dev, binutils, xz-utils and lintian (`cargo xtask deb` builds the Debian package;
#     lintian checks it)
#   - from PyPI, each in its own virtualenv under target/tools: sipvicious 0.3.8 (the real
#     scanner the integration tests run), schemathesis 4.32.5 (fuzzes the management API),
#     mmdb-writer 0.2.7 (writes the country databases of the country-rule test) and
#     oidc-provider-mock 0.3.4 (the OpenID provider of the social sign-in test)
#   - rust-src for the nightly toolchain (the eBPF crate is built with -Z build-std=core)
#   - bpf-linker 0.13 built against Debian's LLVM 22
# Safe to run again: each step checks first and prints what it skipped.
set -euo pipefail

log() { printf '\033[1mbootstrap:\033[0m %s\n' "$*" >&2; }

need_root() {
  if [ "$(id -u)" -ne 0 ]; then
    log "must run as root to install $1 (no sudo on this kind of machine)"
    exit 1
  fi
}

apt_updated=0
apt_install() {
  local missing=()
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if [ ${#missing[@]} -eq 0 ]; then
    log "debian packages present: $*"
    return
  fi
  need_root "${missing[*]}"
  if [ $apt_updated -eq 0 ]; then
    log "apt-get update"
    apt-get update -q >/dev/null
    apt_updated=1
  fi
  log "installing: ${missing[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
}

apt_install llvm-22-dev iproute2 python3 python3-venv libzstd-dev zlib1g-dev sip-tester nftables kamailio \
  iptables ipset xdp-tools fonts-dejavu-core prometheus curl tmux dpkg-dev binutils xz-utils lintian

if ! rustup toolchain list | grep -q '^nightly'; then
  log "installing nightly toolchain"
  rustup toolchain install nightly --profile minimal --component rust-src
elif ! rustup component list --toolchain nightly --installed | grep -q '^rust-src'; then
  log "adding rust-src to nightly"
  rustup component add rust-src --toolchain nightly
else
  log "nightly with rust-src present"
fi

for tc in stable nightly; do
  for comp in clippy rustfmt; do
    if ! rustup component list --toolchain "$tc" --installed 2>/dev/null | grep -q "^$comp"; then
      log "adding $comp to $tc"
      rustup component add "$comp" --toolchain "$tc"
    fi
  done
done

if command -v bpf-linker >/dev/null 2>&1 && bpf-linker --version 2>/dev/null | grep -q '0\.13'; then
  log "bpf-linker present: $(bpf-linker --version)"
else
  log "building bpf-linker 0.13 against LLVM 22 (takes a few minutes, once)"
  LLVM_PREFIX=/usr/lib/llvm-22 cargo install bpf-linker --version '^0.13' --locked \
    --no-default-features --features llvm-22
fi

# Python tools of the tests, pinned, each in a virtualenv of its own under target/tools (no
# system pip): sipvicious, the real scanner of tests/tests/scanners.rs, and schemathesis, which
# fuzzes the management API from its OpenAPI document in tests/tests/api.rs.
pip_tool() {
  local name=$1 version=$2 bin=$3 venv=target/tools/$1
  shift 3
  local have
  have=$("$venv/bin/python" -c "import importlib.metadata as m; print(m.version('$name'))" 2>/dev/null || true)
  if [ -x "$venv/bin/$bin" ] && [ "$have" = "$version" ]; then
    log "$name $version present in $venv"
  else
    log "installing $name $version into $venv"
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q --disable-pip-version-check "$name==$version" "$@"
  fi
}
pip_tool sipvicious 0.3.8 sipvicious_svmap
pip_tool schemathesis 4.32.5 schemathesis
# The countries test writes small MaxMind-format databases with it.
pip_tool mmdb-writer 0.2.7 python
# The OpenID provider the social sign-in test signs in through (tests/oidc/idp.py), with the
# authlib it was tested with.
pip_tool oidc-provider-mock 0.3.4 python authlib==1.9.10
