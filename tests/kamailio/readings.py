#!/usr/bin/env python3
"""How Kamailio reads tricky-but-legal SIP requests (the fields a toll-fraud filter decides on).

Sends each case below over UDP to a Kamailio running tests/kamailio/kamailio.cfg and prints what
it read: the reply's status line and X-Read header, and the lines Kamailio logged meanwhile
(its READ line, or the parser errors when it refused the request). Standard library only.

    python3 tests/kamailio/readings.py              # starts kamailio on 127.0.0.1:5070, stops it
    python3 tests/kamailio/readings.py --target 10.0.0.2:5060 --log /tmp/k.log   # a running one
    python3 tests/kamailio/readings.py --json       # machine-readable

See FINDINGS.md for the readings observed and how callguard's readers compare.
"""

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))

FROM = "From: <sip:101@caller.example>;tag=f1"
TO = "To: <sip:0049301234@pbx>"
CSEQ = "CSeq: 1 INVITE"


# Header lines are given whole, so that each case can bend them. `{addr}`, `{branch}` and `{ci}`
# are filled in per request; the Via carries `rport`, so the reply comes back to our port.
VIA = "Via: SIP/2.0/UDP {addr};branch=z9hG4bK-{branch};rport"


def std(*, to=TO, frm=FROM, ci="Call-ID: {ci}", extra=()):
    """The baseline headers, with one of them replaced."""
    return [VIA, "Max-Forwards: 70", frm, to, ci, CSEQ, *extra, "Content-Length: 0"]


CASES = [
    # (id, what, method, Request-URI, header lines)
    ("a", "baseline", "INVITE", "sip:0049301234@pbx", std()),
    ("b", "To with empty tag `;tag=`", "INVITE", "sip:0049301234@pbx", std(to=TO + ";tag=")),
    ("b2", "To with blank tag `;tag= ` (space)", "INVITE", "sip:0049301234@pbx", std(to=TO + ";tag= ")),
    ("c", "To with `;tag` (no `=`)", "INVITE", "sip:0049301234@pbx", std(to=TO + ";tag")),
    ("d1", "two To: first untagged, second tagged", "INVITE", "sip:0049301234@pbx",
     [VIA, "Max-Forwards: 70", FROM, TO, TO + ";tag=t2", "Call-ID: {ci}", CSEQ, "Content-Length: 0"]),
    ("d2", "two To: first tagged, second untagged", "INVITE", "sip:0049301234@pbx",
     [VIA, "Max-Forwards: 70", FROM, TO + ";tag=t1", TO, "Call-ID: {ci}", CSEQ, "Content-Length: 0"]),
    ("d3", "To, then compact `t:` with tag", "INVITE", "sip:0049301234@pbx",
     [VIA, "Max-Forwards: 70", FROM, TO, "t: <sip:0049301234@pbx>;tag=t2", "Call-ID: {ci}", CSEQ,
      "Content-Length: 0"]),
    # Kamailio stops parsing headers at receive time once From, To, Call-ID and CSeq are found:
    # a duplicate after all four is seen only by later full parses (sanity_check, $hdrc, replies).
    ("d4", "two To, the second (tagged) after Call-ID and CSeq", "INVITE", "sip:0049301234@pbx",
     [VIA, "Max-Forwards: 70", FROM, TO, "Call-ID: {ci}", CSEQ, TO + ";tag=t2", "Content-Length: 0"]),
    ("d5", "two To, the second (untagged) after Call-ID and CSeq", "INVITE", "sip:0049301234@pbx",
     [VIA, "Max-Forwards: 70", FROM, TO + ";tag=t1", "Call-ID: {ci}", CSEQ, TO, "Content-Length: 0"]),
    ("d6", "two To: first untagged with ten spaces before its colon, second tagged after CSeq", "INVITE",
     "sip:0049301234@pbx",
     [VIA, "Max-Forwards: 70", FROM, "To          : <sip:0049301234@pbx>", "Call-ID: {ci}", CSEQ,
      TO + ";tag=t2", "Content-Length: 0"]),
    ("e1", "two From (101 tag f1, then 202 tag f2)", "INVITE", "sip:0049301234@pbx",
     [VIA, "Max-Forwards: 70", FROM, "From: <sip:202@caller.example>;tag=f2", TO, "Call-ID: {ci}", CSEQ,
      "Content-Length: 0"]),
    ("e2", "two Call-ID ({ci}-1, then {ci}-2)", "INVITE", "sip:0049301234@pbx",
     [VIA, "Max-Forwards: 70", FROM, TO, "Call-ID: {ci}-1", "Call-ID: {ci}-2", CSEQ, "Content-Length: 0"]),
    ("e4", "two From, the second after To, Call-ID and CSeq", "INVITE", "sip:0049301234@pbx",
     [VIA, "Max-Forwards: 70", FROM, TO, "Call-ID: {ci}", CSEQ, "From: <sip:202@caller.example>;tag=f2",
      "Content-Length: 0"]),
    ("e5", "two Call-ID, the second after CSeq", "INVITE", "sip:0049301234@pbx",
     [VIA, "Max-Forwards: 70", FROM, TO, "Call-ID: {ci}-1", CSEQ, "Call-ID: {ci}-2", "Content-Length: 0"]),
    ("f1", "compact v/f/t/i/l mixed with long forms", "INVITE", "sip:0049301234@pbx",
     ["v: SIP/2.0/UDP {addr};branch=z9hG4bK-{branch};rport", "Max-Forwards: 70",
      "f: <sip:101@caller.example>;tag=f1", "t: <sip:0049301234@pbx>", "i: {ci}", CSEQ, "l: 0"]),
    ("f2", "odd case names `tO:` `fROM:` `cALL-iD:` `VIA:`", "INVITE", "sip:0049301234@pbx",
     ["VIA: SIP/2.0/UDP {addr};branch=z9hG4bK-{branch};rport", "Max-Forwards: 70",
      "fROM: <sip:101@caller.example>;tag=f1", "tO: <sip:0049301234@pbx>", "cALL-iD: {ci}", CSEQ,
      "Content-Length: 0"]),
    ("f3", "whitespace before the colon `To :` `From\\t:`", "INVITE", "sip:0049301234@pbx",
     [VIA, "Max-Forwards: 70", "From\t: <sip:101@caller.example>;tag=f1", "To : <sip:0049301234@pbx>",
      "Call-ID : {ci}", CSEQ, "Content-Length: 0"]),
    ("f3t", "`To :` with a tag", "INVITE", "sip:0049301234@pbx",
     [VIA, "Max-Forwards: 70", FROM, "To : <sip:0049301234@pbx>;tag=t1", "Call-ID: {ci}", CSEQ,
      "Content-Length: 0"]),
    ("f4", "folded To, tag on the continuation line", "INVITE", "sip:0049301234@pbx",
     [VIA, "Max-Forwards: 70", FROM, "To: <sip:0049301234@pbx>", " ;tag=t1", "Call-ID: {ci}", CSEQ,
      "Content-Length: 0"]),
    ("f5", "To value starting on a continuation line", "INVITE", "sip:0049301234@pbx",
     [VIA, "Max-Forwards: 70", FROM, "To:", " <sip:0049301234@pbx>;tag=t1", "Call-ID: {ci}", CSEQ,
      "Content-Length: 0"]),
    ("f6", "folded To, display name then URI and tag on the next line", "INVITE", "sip:0049301234@pbx",
     [VIA, "Max-Forwards: 70", FROM, 'To: "Bob"', "\t<sip:0049301234@pbx>;tag=t1", "Call-ID: {ci}", CSEQ,
      "Content-Length: 0"]),
    ("g1", "R-URI user with `;isub=1`", "INVITE", "sip:0049301234;isub=1@pbx", std()),
    ("g2", "R-URI user `0049;x=1301234`", "INVITE", "sip:0049;x=1301234@pbx", std()),
    ("g3", "R-URI user with `?foo`", "INVITE", "sip:0049301234?foo@pbx", std()),
    ("g4", "R-URI user percent-escaped `%30%30491234`", "INVITE", "sip:%30%30491234@pbx", std()),
    ("g5", "R-URI user with visual separators `0049-30-1234`", "INVITE", "sip:0049-30-1234@pbx", std()),
    ("g6", "tel: R-URI", "INVITE", "tel:+49301234", std()),
    ("g6b", "tel: R-URI with parameter", "INVITE", "tel:+49-30-1234;phone-context=+49", std()),
    ("g7", "`;user=phone` inside the user part", "INVITE", "sip:+49301234;user=phone@pbx", std()),
    ("g8", "`;user=phone` as URI parameter", "INVITE", "sip:+49301234@pbx;user=phone", std()),
    ("g9", "password in the R-URI userinfo `0049301234:pw`", "INVITE", "sip:0049301234:pw@pbx", std()),
    ("g10", "upper-case scheme `SIP:`", "INVITE", "SIP:0049301234@pbx", std()),
    ("h1", "upper-case `;TAG=abc`", "INVITE", "sip:0049301234@pbx", std(to=TO + ";TAG=abc")),
    ("h2", "spaces `;tag = abc`", "INVITE", "sip:0049301234@pbx", std(to=TO + ";tag = abc")),
    ("h3", "spaces `; tag=abc`", "INVITE", "sip:0049301234@pbx", std(to=TO + "; tag=abc")),
    ("h4", "tag inside the URI `<sip:…;tag=abc>`", "INVITE", "sip:0049301234@pbx",
     std(to="To: <sip:0049301234@pbx;tag=abc>")),
    ("h5", "addr-spec without <> `To: sip:…;tag=abc`", "INVITE", "sip:0049301234@pbx",
     std(to="To: sip:0049301234@pbx;tag=abc")),
    ("h6", "`;tag=` in the quoted display name", "INVITE", "sip:0049301234@pbx",
     std(to='To: "x;tag=1" <sip:0049301234@pbx>')),
    ("h7", "empty tag, then a second tag `;tag=;tag=t2`", "INVITE", "sip:0049301234@pbx",
     std(to=TO + ";tag=;tag=t2")),
    ("h8", "two tags `;tag=t1;tag=t2`", "INVITE", "sip:0049301234@pbx", std(to=TO + ";tag=t1;tag=t2")),
    ("h8b", "a tag, then an empty one `;tag=t1;tag=`", "INVITE", "sip:0049301234@pbx", std(to=TO + ";tag=t1;tag=")),
    ("h8c", "a tag, then a bare `;tag`", "INVITE", "sip:0049301234@pbx", std(to=TO + ";tag=t1;tag")),
    ("h9b", "an empty quoted tag `;tag=\"\"`", "INVITE", "sip:0049301234@pbx", std(to=TO + ';tag=""')),
    ("h9", "quoted tag value `;tag=\"t1\"`", "INVITE", "sip:0049301234@pbx", std(to=TO + ';tag="t1"')),
    ("h10", "two name-addrs in one To, tag on the second", "INVITE", "sip:0049301234@pbx",
     std(to="To: <sip:0049301234@pbx>, <sip:999@pbx>;tag=t1")),
    ("h11", "escaped quote in the display name, then `;tag=1` inside it", "INVITE", "sip:0049301234@pbx",
     std(to='To: "a\\";tag=1" <sip:0049301234@pbx>')),
    ("h12", "escaped quote in the display name, real tag after the URI", "INVITE", "sip:0049301234@pbx",
     std(to='To: "a\\"b" <sip:0049301234@pbx>;tag=t1')),
    ("h13", "`;tag=` inside a quoted header-parameter value `;x=\";tag=1\"`", "INVITE", "sip:0049301234@pbx",
     std(to=TO + ';x=";tag=1"')),
    ("e3", "two CSeq", "INVITE", "sip:0049301234@pbx",
     [VIA, "Max-Forwards: 70", FROM, TO, "Call-ID: {ci}", CSEQ, "CSeq: 2 INVITE", "Content-Length: 0"]),
    ("f3w", "ten spaces before the colon `To          :` with a tag", "INVITE", "sip:0049301234@pbx",
     [VIA, "Max-Forwards: 70", FROM, "To          : <sip:0049301234@pbx>;tag=t1", "Call-ID: {ci}", CSEQ,
      "Content-Length: 0"]),
    ("o", "OPTIONS baseline", "OPTIONS", "sip:0049301234@pbx",
     [VIA, "Max-Forwards: 70", FROM, TO, "Call-ID: {ci}", "CSeq: 1 OPTIONS", "Content-Length: 0"]),
]


def render(method, ruri, headers, addr, n):
    ci = f"cg-read-{n}"
    lines = [f"{method} {ruri} SIP/2.0"]
    lines += [h.format(addr=addr, branch=f"{n}-{int(time.time() * 1000)}", ci=ci) for h in headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def exchange(sock, target, payload, timeout=1.0):
    sock.sendto(payload, target)
    sock.settimeout(timeout)
    try:
        data, _ = sock.recvfrom(65535)
    except socket.timeout:
        return None
    return data.decode(errors="replace")


def new_log(log, pos):
    if not log:
        return [], pos
    with open(log, "rb") as f:
        f.seek(pos)
        data = f.read()
    lines = [l for l in data.decode(errors="replace").splitlines() if l.strip()]
    return lines, pos + len(data)


def start_kamailio(host, port):
    """Starts kamailio with the fixture config; returns (process, log path, seconds to ready)."""
    run = tempfile.mkdtemp(prefix="kamailio-cg-")
    log = os.path.join(run, "kamailio.log")
    cmd = ["kamailio", "-f", os.path.join(HERE, "kamailio.cfg"), "-l", f"udp:{host}:{port}", "-DD", "-E",
           "-Y", run, "-P", os.path.join(run, "kamailio.pid"), "-m", "32", "-M", "8"]
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=open(log, "wb"))
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    probe.bind((host, 0))
    addr = "%s:%d" % probe.getsockname()
    for n in range(200):
        if proc.poll() is not None:
            sys.exit(f"kamailio exited ({proc.returncode}); see {log}")
        msg = render("OPTIONS", f"sip:{host}:{port}",
                     [VIA, "Max-Forwards: 70", FROM, f"To: <sip:{host}>", "Call-ID: {ci}", "CSeq: 1 OPTIONS",
                      "Content-Length: 0"], addr, f"ready{n}")
        if exchange(probe, (host, port), msg, timeout=0.05):
            return proc, log, run, time.monotonic() - t0
    proc.terminate()
    sys.exit(f"kamailio not ready after 10 s; see {log}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--target", help="host:port of a running kamailio (default: start one on 127.0.0.1:5070)")
    ap.add_argument("--log", help="its log file (stderr of `kamailio -E`), to show the lines it logged")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--only", nargs="*", help="case ids")
    a = ap.parse_args()
    proc = run = None
    if a.target:
        host, port = a.target.rsplit(":", 1)
        port, log = int(port), a.log
    else:
        host, port = "127.0.0.1", 5070
        proc, log, run, ready = start_kamailio(host, port)
        print(f"# kamailio ready after {ready:.2f} s", file=sys.stderr)
    # Our address towards the target (for the Via): what connect() picks.
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.connect((host, port))
    addr = "%s:%d" % sock.getsockname()
    pos = os.path.getsize(log) if log else 0
    out = []
    try:
        for cid, what, method, ruri, headers in CASES:
            if a.only and cid not in a.only:
                continue
            payload = render(method, ruri, headers, addr, cid)
            reply = exchange(sock, (host, port), payload)
            time.sleep(0.15)
            logged, pos = new_log(log, pos)
            status = xread = None
            if reply:
                first, *rest = reply.split("\r\n")
                status = first
                xread = next((l.split(":", 1)[1].strip() for l in rest if l.lower().startswith("x-read:")), None)
            out.append({"id": cid, "what": what, "request": payload.decode(), "status": status, "x_read": xread,
                        "log": [l for l in logged if "READ " in l or "ERROR" in l or "WARNING" in l]})
    finally:
        if proc:
            proc.terminate()
            proc.wait(timeout=10)
            shutil.rmtree(run, ignore_errors=True)
    if a.json:
        json.dump(out, sys.stdout, indent=1)
        print()
        return
    for r in out:
        print(f"== {r['id']}: {r['what']}")
        print("   " + r["request"].rstrip().replace("\r\n", "\n   "))
        print(f"-> {r['status'] or 'no reply within 1 s'}")
        if r["x_read"]:
            print(f"   X-Read: {r['x_read']}")
        for l in r["log"]:
            print(f"   log: {l.strip()}")
        print()


if __name__ == "__main__":
    main()
