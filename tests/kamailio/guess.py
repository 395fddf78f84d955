#!/usr/bin/env python3
"""A patient SIP password guesser, the attacker of callguard's brute-force tests.

It registers as one user with a phone's User-Agent, the way a guesser that wants to look like
a phone does: one REGISTER without credentials to get a challenge, then one REGISTER with
digest credentials (RFC 2617, MD5, no qop unless the challenge asks for it) per guess, at most
`--rate` guesses a second, each on the same Call-ID with a growing CSeq, answering a new
challenge with the next guess. It stops at the first `200`, or after three guesses in a row
went unanswered (the source is banned). The last line it prints is a JSON summary:

    {"guesses": N, "answers": {"401": n, ...}, "unanswered": n, "found": "password" | null}

Usage (inside the attacker's network namespace):

    guess.py --target 198.18.0.1:5060 --bind 198.18.0.2:5070 --user 101 \
        --wrong 20 [--right correct-horse-101 | --no-right] [--rate 4] [--cseq-method OPTIONS]

`--cseq-method` names another method in the guesses' CSeq (the first REGISTER, which only asks
for the challenge, keeps REGISTER): the PBX copies the CSeq into its answer, so an answer reader
that trusts it would take a wrong guess's 401 for the answer to, say, an OPTIONS.
"""

import argparse
import hashlib
import json
import random
import re
import socket
import sys
import time


def md5(text):
    return hashlib.md5(text.encode()).hexdigest()


def challenge(msg):
    """The parameters of the WWW-Authenticate header of a 401, as a dict."""
    m = re.search(r"^WWW-Authenticate:\s*Digest\s+(.*)$", msg, re.M | re.I)
    if not m:
        return None
    return {k.lower(): v.strip('"') for k, v in re.findall(r'(\w+)=("[^"]*"|[^,\s]+)', m.group(1))}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--target", required=True, help="registrar address:port")
    ap.add_argument("--bind", required=True, help="local address:port")
    ap.add_argument("--user", default="101")
    ap.add_argument("--domain", default="callguard.test")
    ap.add_argument("--wrong", type=int, default=20, help="wrong passwords to try")
    ap.add_argument("--right", help="the right password, tried after the wrong ones")
    ap.add_argument("--no-right", action="store_true", help="try only the wrong passwords")
    ap.add_argument("--rate", type=float, default=4.0, help="guesses a second at most")
    ap.add_argument("--ua", default="Yealink SIP-T46S 66.86.0.15")
    ap.add_argument("--cseq-method", default="REGISTER", help="the method the guesses' CSeq names")
    a = ap.parse_args()

    host, port = a.target.rsplit(":", 1)
    lhost, lport = a.bind.rsplit(":", 1)
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((lhost, int(lport)))
    s.settimeout(1.0)
    dst = (host, int(port))
    call_id = "%08x@%s" % (random.getrandbits(32), lhost)
    cseq = 0
    passwords = ["guess-%03d" % i for i in range(a.wrong)] + ([a.right] if a.right and not a.no_right else [])
    answers, unanswered, in_a_row, found, guesses = {}, 0, 0, None, 0

    def register(auth=None):
        nonlocal cseq
        cseq += 1
        cseq_method = a.cseq_method if auth else "REGISTER"
        uri = "sip:%s" % a.domain
        msg = (
            "REGISTER %s SIP/2.0\r\n"
            "Via: SIP/2.0/UDP %s:%s;rport;branch=z9hG4bK%x\r\n"
            "Max-Forwards: 70\r\n"
            "From: <sip:%s@%s>;tag=g%x\r\n"
            "To: <sip:%s@%s>\r\n"
            "Call-ID: %s\r\n"
            "CSeq: %d %s\r\n"
            "Contact: <sip:%s@%s:%s>\r\n"
            "User-Agent: %s\r\n"
            "Expires: 600\r\n"
            "%s"
            "Content-Length: 0\r\n\r\n"
        ) % (uri, lhost, lport, random.getrandbits(40), a.user, a.domain, 7, a.user, a.domain,
             call_id, cseq, cseq_method, a.user, lhost, lport, a.ua, auth or "")
        s.sendto(msg.encode(), dst)
        deadline = time.time() + 1.0
        while time.time() < deadline:
            try:
                data, _ = s.recvfrom(65535)
            except socket.timeout:
                return None
            text = data.decode(errors="replace")
            if re.search(r"^CSeq:\s*%d %s" % (cseq, cseq_method), text, re.M | re.I) and not text.startswith("SIP/2.0 1"):
                return text
        return None

    first = register()
    chal = challenge(first) if first else None
    if chal is None:
        print(json.dumps({"error": "no challenge", "answer": first}))
        return 1
    for pw in passwords:
        started = time.time()
        ha1 = md5("%s:%s:%s" % (a.user, chal.get("realm", a.domain), pw))
        uri = "sip:%s" % a.domain
        ha2 = md5("REGISTER:%s" % uri)
        if "auth" in chal.get("qop", "").split(","):
            cnonce = "%x" % random.getrandbits(32)
            resp = md5("%s:%s:00000001:%s:auth:%s" % (ha1, chal["nonce"], cnonce, ha2))
            extra = ', qop=auth, nc=00000001, cnonce="%s"' % cnonce
        else:
            resp = md5("%s:%s:%s" % (ha1, chal["nonce"], ha2))
            extra = ""
        auth = (
            'Authorization: Digest username="%s", realm="%s", nonce="%s", uri="%s", '
            'response="%s", algorithm=MD5%s\r\n'
        ) % (a.user, chal.get("realm", a.domain), chal["nonce"], uri, resp, extra)
        guesses += 1
        answer = register(auth)
        if answer is None:
            unanswered += 1
            in_a_row += 1
            print("guess %d (%s): no answer" % (guesses, pw), flush=True)
            if in_a_row >= 3:
                break
        else:
            in_a_row = 0
            code = answer.split(" ", 2)[1]
            answers[code] = answers.get(code, 0) + 1
            print("guess %d (%s): %s" % (guesses, pw, code), flush=True)
            if code.startswith("2"):
                found = pw
                break
            chal = challenge(answer) or chal
        wait = 1.0 / a.rate - (time.time() - started)
        if wait > 0:
            time.sleep(wait)
    print(json.dumps({"guesses": guesses, "answers": answers, "unanswered": unanswered, "found": found}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
