#!/usr/bin/env python3
"""tollgate interop suite: official provider SDKs <-> `tollgate verify` / `tollgate sign`.

Direction "sdk->tg": an official SDK signs a randomised request; `tollgate verify` must accept it and must
reject one-byte tampers with the expected reason. Direction "tg->sdk": `tollgate sign` prints a raw request;
the official SDK's verifier must accept it, and must refuse what `tollgate sign --tamper X` prints.
Every SDK-signed case is also checked by the same SDK's verifier first (harness self-test).

Env: INTEROP_SEED (default: random, printed), INTEROP_N (cases per scheme sdk->tg, default 120),
INTEROP_N_SIGN (cases per scheme tg->sdk, default 25), INTEROP_ONLY (comma list of scheme names),
INTEROP_SELFTEST=1 (SDK-only harness check, no tollgate binary), TOLLGATE (binary path).
"""
from __future__ import annotations

import base64
import hashlib
import json
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from unittest import mock
from urllib.parse import quote, urlsplit, parse_qsl

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
TG = os.environ.get("TOLLGATE", os.path.join(ROOT, "target", "debug", "tollgate"))
SELFTEST = os.environ.get("INTEROP_SELFTEST") == "1"

# ----------------------------------------------------------------------------------------------------
# node bridge


class Node:
    def __init__(self):
        self.p = subprocess.Popen(["node", os.path.join(HERE, "sdk_node.mjs")], cwd=HERE, stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, text=True, encoding="utf-8")
        self.lock = threading.Lock()
        self.n = 0

    def call(self, op, **kw):
        with self.lock:
            self.n += 1
            kw.update(id=self.n, op=op)
            self.p.stdin.write(json.dumps(kw) + "\n")
            self.p.stdin.flush()
            out = json.loads(self.p.stdout.readline())
        if not out["ok"]:
            raise RuntimeError("node SDK error: " + out["error"])
        return out["result"]


NODE = None
# SDK verifiers read the wall clock; the harness pins it with mock.patch, which is process-wide.
CLOCK = threading.Lock()


def node():
    global NODE
    if NODE is None:
        NODE = Node()
    return NODE


# ----------------------------------------------------------------------------------------------------
# requests


@dataclass
class Req:
    method: str
    url: str  # full public URL incl. query
    headers: list = field(default_factory=list)  # [(name, value)]
    body: bytes = b""
    now: int = 0
    form: list = None  # decoded form params [(k, v)] when the body is a form
    json_body: bool = False

    def header(self, name):
        for k, v in self.headers:
            if k.lower() == name.lower():
                return v
        return None

    def set_header(self, name, value):
        self.headers = [(k, v) for k, v in self.headers if k.lower() != name.lower()] + [(name, value)]

    @property
    def target(self):
        u = urlsplit(self.url)
        return (u.path or "/") + ("?" + u.query if u.query else "")

    def raw(self) -> bytes:
        u = urlsplit(self.url)
        lines = [f"{self.method} {self.target} HTTP/1.1", f"Host: {u.netloc}"]
        lines += [f"{k}: {v}" for k, v in self.headers]
        if self.body or self.method != "GET":
            lines.append(f"Content-Length: {len(self.body)}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8") + self.body

    def repro(self):
        return {"method": self.method, "url": self.url, "headers": self.headers,
                "body": self.body.decode("utf-8", "replace"), "now": self.now}


def parse_raw(raw: bytes, scheme: str) -> Req:
    sep = b"\r\n\r\n" if b"\r\n\r\n" in raw else b"\n\n"
    head, _, body = raw.partition(sep)
    lines = head.decode("utf-8").replace("\r\n", "\n").split("\n")
    method, target, _ = lines[0].split(" ", 2)
    headers = []
    for line in lines[1:]:
        k, _, v = line.partition(":")
        headers.append((k.strip(), v.strip()))
    host = next(v for k, v in headers if k.lower() == "host")
    headers = [(k, v) for k, v in headers if k.lower() not in ("host", "content-length")]
    r = Req(method, f"{scheme}://{host}{target}", headers, body)
    ct = r.header("content-type") or ""
    if "x-www-form-urlencoded" in ct:
        r.form = parse_qsl(body.decode("utf-8"), keep_blank_values=True)
    r.json_body = "json" in ct
    return r


# ----------------------------------------------------------------------------------------------------
# random material

PIECES = ["a", "b", "Z", "x", "hello", "0", "42", " ", "+", "%20", "'", "@", ":", "é", "日本", "😀", "𝄞", "&", "=",
          "/", "?", "-", ".", "_", "~", ",", ";", "<", ">", "\"", "#"]
KEYS = ["To", "ToCity", "From", "Body", "CallSid", "a", "Digits", "Caller", "MessagingBinding.Address", "SIP-H-To",
        "AccountSid", "z", "Z", "ä", "日"]
WORDS = ["hello", "world", "sip", "voice", "message", "ringing", "queue", "joy"]


def rstr(rng, n=None):
    n = rng.randint(0, 6) if n is None else n
    return rng.choice(WORDS) + "".join(rng.choice(PIECES) for _ in range(n))


def rparams(rng, allow_repeat=True, min_n=1):
    out = []
    for _ in range(rng.randint(min_n, 6)):
        k = rng.choice(KEYS)
        out.append((k, rstr(rng)))
        if allow_repeat and rng.random() < 0.2:
            out.append((k, rstr(rng)))
    return out


def enc(s, rng, safe=""):
    plus = rng.random() < 0.5
    if plus:
        return quote(s, safe=safe + " ").replace(" ", "+")
    return quote(s, safe=safe)


def form_encode(params, rng):
    return "&".join(enc(k, rng) + "=" + enc(v, rng) for k, v in params)


def query_encode(params, rng):
    safe = "".join(c for c in "'@:," if rng.random() < 0.5)
    return "&".join(enc(k, rng, safe) + "=" + enc(v, rng, safe) for k, v in params)


def rurl(rng, ports=("", ":443", ":8443"), query=True, scheme=None):
    scheme = scheme or rng.choice(["https", "https", "http"])
    port = rng.choice(ports)
    if port == ":443" and scheme == "http":
        port = ":80"
    host = rng.choice(["example.com", "hooks.example.org", "mycompany.com", "127.0.0.1"])
    path = rng.choice(["/webhook", "/myapp.php", "/voice/answer", "/hooks/sms/", "/status"])
    url = f"{scheme}://{host}{port}{path}"
    if query and rng.random() < 0.5:
        url += "?" + query_encode(rparams(rng, min_n=1), rng)
    return url


def rurl_ascii_query(rng):
    while True:
        url = rurl(rng)
        q = urlsplit(url).query
        if all(ord(c) < 128 for k, v in parse_qsl(q, keep_blank_values=True) for c in k + v):
            return url


def rjson(rng):
    obj = {"event": rng.choice(["call.initiated", "message.received"]), "id": str(uuid.UUID(int=rng.getrandbits(128))),
           "text": rstr(rng, 8), "n": rng.randint(0, 10 ** 9), "ok": rng.random() < 0.5,
           "nested": {"k": rstr(rng), "list": [rstr(rng), 1, None]}}
    sep = rng.choice([(",", ":"), (", ", ": ")])
    return json.dumps(obj, ensure_ascii=rng.random() < 0.3, separators=sep)


# ----------------------------------------------------------------------------------------------------
# tamper helpers

LETTERS = "ghijklmnopqrstuvwxyzGHIJKLMNOPQRSTUVWXYZ"  # never inside a %XX escape or a hex digest


def flip_letter(s: str, rng, lo=0, hi=None):
    hi = len(s) if hi is None else hi
    idx = [i for i in range(lo, hi) if s[i] in LETTERS]
    if not idx:
        return None
    i = rng.choice(idx)
    return s[:i] + rng.choice([c for c in LETTERS if c != s[i]]) + s[i + 1:]


def json_string_positions(s):
    pos, ins, esc = [], False, False
    for i, c in enumerate(s):
        if ins:
            if esc:
                esc = False
            elif c == "\\":
                esc = True
            elif c == '"':
                ins = False
            elif c in LETTERS:
                pos.append(i)
        elif c == '"':
            ins = True
    return pos


def tamper_body(r: Req, rng):
    s = r.body.decode("utf-8")
    if r.json_body:
        pos = json_string_positions(s)
        if not pos:
            return None
        i = rng.choice(pos)
        s = s[:i] + rng.choice([c for c in LETTERS if c != s[i]]) + s[i + 1:]
    else:
        # a form value (after '='), never a key
        vals = [i for i in range(len(s)) if s[i] in LETTERS and "=" in s[:i].split("&")[-1]]
        if not vals:
            return None
        i = rng.choice(vals)
        s = s[:i] + rng.choice([c for c in LETTERS if c != s[i]]) + s[i + 1:]
        return replace(r, body=s.encode("utf-8"), form=parse_qsl(s, keep_blank_values=True))
    return replace(r, body=s.encode("utf-8"))


def tamper_query_value(r: Req, rng):
    u = r.url
    q = u.find("?")
    if q < 0:
        return None
    pos = [i for i in range(q + 1, len(u)) if u[i] in LETTERS and "=" in u[q + 1:i].split("&")[-1]
           and not u[q + 1:i].split("&")[-1].startswith("bodySHA256=")]
    if not pos:
        return None
    i = rng.choice(pos)
    return replace(r, url=u[:i] + rng.choice([c for c in LETTERS if c != u[i]]) + u[i + 1:])


def tamper_param(r: Req, rng):
    if r.form:
        return tamper_body(r, rng)
    return tamper_query_value(r, rng)


def tamper_path(r: Req, rng):
    u = urlsplit(r.url)
    start = len(u.scheme) + 3 + len(u.netloc)
    return replace(r, url=flip_letter(r.url, rng, start, start + len(u.path)))


B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
HEX = "0123456789abcdef"


def flip_at(s, i, alphabet):
    return s[:i] + next(c for c in alphabet if c != s[i] and c.lower() != s[i].lower()) + s[i + 1:]


def tamper_header_sig(name, lo_fn=lambda v: 0, alphabet=B64):
    def f(r: Req, rng):
        v = r.header(name)
        r2 = replace(r, headers=list(r.headers))
        r2.set_header(name, flip_at(v, lo_fn(v), alphabet))
        return r2
    return f


def stale(r: Req, rng):
    return replace(r, now=r.now + 3600)


def early(r: Req, rng):
    return replace(r, now=r.now - 3600)


# ----------------------------------------------------------------------------------------------------
# schemes


class CIHeaders(dict):
    pass


def hdict(r: Req):
    return {k: v for k, v in r.headers}


class MultiDict:
    """The (k, [v]) mapping shape web frameworks hand the SDKs (Flask's MultiDict.getall)."""

    def __init__(self, pairs):
        self.pairs = list(pairs)

    def __iter__(self):
        return iter(dict.fromkeys(k for k, _ in self.pairs))

    def __len__(self):
        return len(self.pairs)

    def __getitem__(self, k):
        return [v for kk, v in self.pairs if kk == k][-1]

    def getall(self, k):
        return [v for kk, v in self.pairs if kk == k]


@dataclass
class Tamper:
    name: str
    fn: object
    reasons: tuple  # acceptable tollgate reasons
    sign_flag: str = None  # `tollgate sign --tamper` name, None: not exercised in tg->sdk
    sdk_detects: bool = True  # whether the SDK verifier can see this tamper


class Scheme:
    name = ""
    provider = ""
    sets: list = []
    tampers: list = []
    # Whether the SDK's verifier enforces a freshness window. Where it does not (Vonage sms `sig`,
    # both Sinch SDKs), a request signed an hour ago still passes the SDK, so `tollgate sign --tamper
    # timestamp` is checked as "the SDK accepts the signature, tollgate refuses it as stale".
    sdk_checks_freshness = True

    def secret(self, rng) -> str:
        return base64.b64encode(rng.randbytes(24)).decode()

    def verify_secret(self, secret):  # the secret tollgate verify / the SDK verifier take
        return secret

    def extra_env(self):
        return {}

    def gen(self, rng, secret, now) -> Req:
        raise NotImplementedError

    def sdk_verify(self, r: Req, secret) -> bool:
        raise NotImplementedError

    def sign_inputs(self, rng, now):
        """(url, method, args) for `tollgate sign`."""
        raise NotImplementedError


def twilio_url_variant(url, rng):
    from twilio.request_validator import add_port, remove_port
    p = urlsplit(url)
    from urllib.parse import urlparse
    pu = urlparse(url)
    return rng.choice([url, remove_port(pu), add_port(pu)])


class Twilio(Scheme):
    provider = "twilio"

    def __init__(self, algo):
        self.algo = algo
        self.name = "twilio/" + ("classic" if algo == "HMAC_SHA1" else "sharedkey-sha256")
        self.sets = ["algorithm=" + ("hmac-sha1" if algo == "HMAC_SHA1" else "hmac-sha256")]
        self.tampers = [
            Tamper("body", tamper_body, ("signature_mismatch", "body_hash_mismatch"), "body"),
            Tamper("param", tamper_param, ("signature_mismatch",), "param"),
            Tamper("url", tamper_path, ("signature_mismatch",), "url"),
            Tamper("signature", tamper_header_sig("X-Twilio-Signature"), ("signature_mismatch",), "signature"),
        ]

    def headers(self):
        if self.algo == "HMAC_SHA1":
            return []
        return [("X-Twilio-Webhooks-Signature-Settings", f"key=webhooks_sharedkey_{uuid.uuid4().hex[:8]},algorithm={self.algo}")]

    def gen(self, rng, secret, now):
        from twilio.request_validator import RequestValidator
        v = RequestValidator(secret)
        kind = rng.choice(["form", "form", "get", "json", "empty"])
        url = rurl(rng)
        if kind == "get":
            r = Req("GET", url)
            params = {}
        elif kind == "json":
            body = rjson(rng)
            url += ("&" if "?" in url else "?") + "bodySHA256=" + hashlib.sha256(body.encode()).hexdigest()
            r = Req("POST", url, [("Content-Type", "application/json")], body.encode(), json_body=True)
            params = {}
        else:
            form = rparams(rng) if kind == "form" else []
            r = Req("POST", url, [("Content-Type", "application/x-www-form-urlencoded")],
                    form_encode(form, rng).encode(), form=form)
            params = MultiDict(form)
        sig = v.compute_signature(twilio_url_variant(url, rng), params, self.algo)
        r.headers += [("X-Twilio-Signature", sig)] + self.headers()
        r.now = now
        return r

    def sdk_verify(self, r, secret):
        from twilio.request_validator import RequestValidator, get_signature_algorithm
        v = RequestValidator(secret)
        algo = get_signature_algorithm(r.header("X-Twilio-Webhooks-Signature-Settings"))
        sig = r.header("X-Twilio-Signature") or ""
        if r.json_body:
            ok = v.validate(r.url, r.body.decode(), sig, algo)
        else:
            ok = v.validate(r.url, MultiDict(r.form or []), sig, algo)
        if self.algo == "HMAC_SHA1":  # the node SDK (classic only) must agree
            if r.json_body:
                okn = node().call("twilio_validate_body", token=secret, sig=sig, url=r.url, body=r.body.decode())
            else:
                p = {}
                for k, val in r.form or []:
                    p.setdefault(k, []).append(val)
                p = {k: (vs if len(vs) > 1 else vs[0]) for k, vs in p.items()}
                okn = node().call("twilio_validate", token=secret, sig=sig, url=r.url, params=p)
            if okn != ok:
                raise AssertionError(f"twilio python SDK says {ok}, node SDK says {okn}")
        return ok

    def sign_inputs(self, rng, now):
        url = rurl(rng)
        kind = rng.choice(["form", "json"])
        if kind == "json":
            return url, "POST", {"json": rjson(rng)}
        return url, "POST", {"form": rparams(rng)}


class SignalWireA(Scheme):
    provider = "signalwire"
    name = "signalwire/json-A"
    tampers = [
        Tamper("body", tamper_body, ("signature_mismatch",), "body"),
        Tamper("url", tamper_path, ("signature_mismatch",), "url"),
        Tamper("param", tamper_query_value, ("signature_mismatch",), None),
        Tamper("signature", tamper_header_sig("X-SignalWire-Signature", alphabet=HEX), ("signature_mismatch",), "signature"),
    ]

    def secret(self, rng):
        return "PSK_" + base64.b32encode(rng.randbytes(15)).decode()

    def gen(self, rng, secret, now):
        from signalwire.core.security import webhook_validator as wv
        url = rurl(rng)
        body = rjson(rng) if rng.random() < 0.9 else ""
        r = Req("POST", url, [("Content-Type", "application/json")], body.encode(), json_body=True, now=now)
        r.headers.append(("X-SignalWire-Signature", wv._hex_hmac_sha1(secret, url + body)))
        return r

    def sdk_verify(self, r, secret):
        from signalwire.core.security import webhook_validator as wv
        sig = r.header("X-SignalWire-Signature") or r.header("X-Twilio-Signature") or ""
        return wv.validate_webhook_signature(secret, sig, r.url, r.body.decode())

    def sign_inputs(self, rng, now):
        return rurl(rng), "POST", {"json": rjson(rng)}


class SignalWireB(SignalWireA):
    name = "signalwire/compat-B"
    tampers = [
        Tamper("body", tamper_body, ("signature_mismatch",), "body"),
        Tamper("param", tamper_param, ("signature_mismatch",), "param"),
        Tamper("url", tamper_path, ("signature_mismatch",), "url"),
        Tamper("signature", lambda r, rng: tamper_header_sig(r.sig_header)(r, rng), ("signature_mismatch",), "signature"),
    ]

    def gen(self, rng, secret, now):
        from signalwire.core.security import webhook_validator as wv
        url = rurl(rng)
        form = rparams(rng)
        r = Req("POST", url, [("Content-Type", "application/x-www-form-urlencoded")],
                form_encode(form, rng).encode(), form=form, now=now)
        signed_url = rng.choice(wv._candidate_urls(url))
        sig = wv._b64_hmac_sha1(secret, signed_url + wv._sorted_concat_params(form))
        name = rng.choice(["X-SignalWire-Signature", "X-Twilio-Signature"])
        r.headers.append((name, sig))
        r.sig_header = name
        return r

    def sign_inputs(self, rng, now):
        return rurl(rng), "POST", {"form": rparams(rng)}


Req.sig_header = "X-SignalWire-Signature"


class PlivoV3(Scheme):
    provider = "plivo"
    name = "plivo/v3"
    sets = ["version=v3"]
    tampers = [
        Tamper("body", tamper_body, ("signature_mismatch",), "body"),
        Tamper("param", tamper_param, ("signature_mismatch",), "param"),
        Tamper("url", tamper_path, ("signature_mismatch",), "url"),
        Tamper("signature", lambda r, rng: _set(r, "X-Plivo-Signature-V3", ",".join(
            flip_at(x, 0, B64) for x in r.header("X-Plivo-Signature-V3").split(","))), ("signature_mismatch",), "signature"),
        Tamper("nonce", lambda r, rng: tamper_header_sig("X-Plivo-Signature-V3-Nonce", alphabet=HEX)(r, rng),
               ("signature_mismatch",), None),
    ]

    def gen(self, rng, secret, now):
        from plivo.utils import signature_v3 as s3
        # plivo-python 4.63.0 raises UnicodeEncodeError on a query that percent-decodes to non-ASCII (see
        # README, "SDK bugs found"), so URL queries here stay ASCII; bodies still carry any Unicode.
        url = rurl_ascii_query(rng)
        method = rng.choice(["GET", "POST", "POST"])
        nonce = str(rng.randint(10 ** 19, 10 ** 20))
        if method == "GET":
            r = Req("GET", url)
            base = s3.construct_get_url(url, {})
        else:
            form = rparams(rng, min_n=0)
            r = Req("POST", url, [("Content-Type", "application/x-www-form-urlencoded")],
                    form_encode(form, rng).encode(), form=form)
            base = s3.construct_post_url(url, self._pdict(form))
        sig = s3.get_signature_v3(secret.encode(), base.decode("utf-8"), nonce.encode()).decode()
        if rng.random() < 0.3:  # several signatures: any may match
            other = base64.b64encode(rng.randbytes(32)).decode()
            sig = ",".join(rng.sample([sig, other], 2))
        r.headers += [("X-Plivo-Signature-V3", sig), ("X-Plivo-Signature-V3-Nonce", nonce)]
        r.now = now
        return r

    @staticmethod
    def _pdict(form):
        d = {}
        for k, v in form:
            d.setdefault(k, []).append(v)
        return {k: (v if len(v) > 1 else v[0]) for k, v in d.items()}

    def sdk_verify(self, r, secret):
        from plivo.utils.signature_v3 import validate_v3_signature
        params = self._pdict(r.form or []) if r.method == "POST" else {}
        return validate_v3_signature(r.method, r.url, r.header("X-Plivo-Signature-V3-Nonce") or "", secret,
                                     r.header("X-Plivo-Signature-V3") or "", params)

    def sign_inputs(self, rng, now):
        return rurl_ascii_query(rng), "POST", {"form": rparams(rng)}  # plivo-python bug, see gen()


class PlivoV2(Scheme):
    provider = "plivo"
    name = "plivo/v2"
    sets = ["version=v2"]
    tampers = [
        Tamper("url", tamper_path, ("signature_mismatch",), "url"),
        Tamper("signature", tamper_header_sig("X-Plivo-Signature-V2"), ("signature_mismatch",), "signature"),
        Tamper("nonce", lambda r, rng: tamper_header_sig("X-Plivo-Signature-V2-Nonce", alphabet=HEX)(r, rng),
               ("signature_mismatch",), None),
    ]

    def gen(self, rng, secret, now):
        # plivo.utils.validate_signature computes the digest inline; there is no signing helper to call,
        # so the harness computes the documented HMAC and the SDK verifier must confirm it (self-check).
        import hmac
        from urllib.parse import urlparse, urlunparse
        url = rurl(rng)
        nonce = str(rng.randint(10 ** 19, 10 ** 20))
        form = rparams(rng, min_n=0)
        r = Req("POST", url, [("Content-Type", "application/x-www-form-urlencoded")],
                form_encode(form, rng).encode(), form=form, now=now)
        p = urlparse(url)
        base = urlunparse((p.scheme, p.netloc, p.path, "", "", ""))
        sig = base64.b64encode(hmac.new(secret.encode(), (base + nonce).encode(), "sha256").digest()).decode()
        r.headers += [("X-Plivo-Signature-V2", sig), ("X-Plivo-Signature-V2-Nonce", nonce)]
        return r

    def sdk_verify(self, r, secret):
        from plivo.utils import validate_signature
        return validate_signature(r.url, r.header("X-Plivo-Signature-V2-Nonce") or "",
                                  r.header("X-Plivo-Signature-V2") or "", secret)

    def sign_inputs(self, rng, now):
        return rurl(rng), "POST", {"form": rparams(rng)}


class Telnyx(Scheme):
    provider = "telnyx"
    name = "telnyx/ed25519"
    tampers = [
        Tamper("body", tamper_body, ("signature_mismatch",), "body"),
        Tamper("signature", tamper_header_sig("telnyx-signature-ed25519", lambda v: 5), ("signature_mismatch",), "signature"),
        Tamper("timestamp", lambda r, rng: _bump_header(r, "telnyx-timestamp", 1), ("signature_mismatch",), "timestamp"),
        Tamper("stale", stale, ("timestamp_out_of_window",), None),
        Tamper("future", early, ("timestamp_out_of_window",), None),
    ]

    def secret(self, rng):  # the 32-byte seed (what `tollgate sign` takes)
        return base64.b64encode(rng.randbytes(32)).decode()

    def verify_secret(self, secret):
        from nacl.signing import SigningKey
        return base64.b64encode(bytes(SigningKey(base64.b64decode(secret)).verify_key)).decode()

    def gen(self, rng, secret, now):
        # telnyx-python only verifies; it has no signing helper. The harness signs with PyNaCl (the SDK's
        # own Ed25519 dependency) and the SDK verifier must accept the result (self-check).
        from nacl.signing import SigningKey
        ts = str(now - rng.randint(0, 250))
        body = rjson(rng)
        sig = SigningKey(base64.b64decode(secret)).sign(f"{ts}|{body}".encode()).signature
        return Req("POST", rurl(rng), [("Content-Type", "application/json"),
                                       ("telnyx-signature-ed25519", base64.b64encode(sig).decode()),
                                       ("telnyx-timestamp", ts)], body.encode(), json_body=True, now=now)

    def sdk_verify(self, r, secret):
        from telnyx.lib import webhook_verification as wv
        with CLOCK, mock.patch.object(wv.time, "time", lambda: float(r.now)):
            try:
                wv.verify_webhook_signature(r.body, hdict(r), self.verify_secret(secret))
                return True
            except wv.WebhookVerificationError:
                return False

    def sign_inputs(self, rng, now):
        return rurl(rng), "POST", {"json": rjson(rng)}


def _bump_header(r, name, delta):
    r2 = replace(r, headers=list(r.headers))
    r2.set_header(name, str(int(r.header(name)) + delta))
    return r2


class StandardWebhooks(Scheme):
    provider = "standard-webhooks"
    name = "standard-webhooks/v1"
    tampers = [
        Tamper("body", tamper_body, ("signature_mismatch",), "body"),
        Tamper("signature", tamper_header_sig("webhook-signature", lambda v: v.rindex(",") + 3), ("signature_mismatch",), "signature"),
        Tamper("timestamp", lambda r, rng: _bump_header(r, "webhook-timestamp", 1), ("signature_mismatch",), "timestamp"),
        Tamper("id", lambda r, rng: _set(r, "webhook-id", flip_letter(r.header("webhook-id"), rng, 4)),
               ("signature_mismatch",), None),
        Tamper("stale", stale, ("timestamp_out_of_window",), None),
        Tamper("future", early, ("timestamp_out_of_window",), None),
    ]

    def secret(self, rng):
        return "whsec_" + base64.b64encode(rng.randbytes(rng.choice([24, 32, 64]))).decode()

    def gen(self, rng, secret, now):
        from standardwebhooks.webhooks import Webhook
        ts = now - rng.randint(-250, 250)
        msg_id = "msg_" + "".join(rng.choice(LETTERS + "0123456789") for _ in range(20))
        body = rjson(rng)  # the python library json-parses the payload: no empty bodies
        sig = Webhook(secret).sign(msg_id, datetime.fromtimestamp(ts, tz=timezone.utc), body)
        if rng.random() < 0.3:  # rotation: an unknown version and a wrong v1 before the good one
            sig = "v1a,AAAA v1," + base64.b64encode(rng.randbytes(32)).decode() + " " + sig
        return Req("POST", rurl(rng), [("Content-Type", "application/json"), ("webhook-id", msg_id),
                                       ("webhook-timestamp", str(ts)), ("webhook-signature", sig)],
                   body.encode(), json_body=True, now=now)

    def sdk_verify(self, r, secret):
        from standardwebhooks import webhooks as sw
        fixed = datetime.fromtimestamp(r.now, tz=timezone.utc)

        class DT(datetime):
            @classmethod
            def now(cls, tz=None):
                return fixed
        with CLOCK, mock.patch.object(sw, "datetime", DT):
            try:
                sw.Webhook(secret).verify(r.body.decode(), hdict(r))
                return True
            except sw.WebhookVerificationError:
                return False

    def sign_inputs(self, rng, now):
        return rurl(rng), "POST", {"json": rjson(rng)}


def _set(r, name, value):
    r2 = replace(r, headers=list(r.headers))
    r2.set_header(name, value)
    return r2


class VonageJwt(Scheme):
    provider = "vonage"
    name = "vonage/jwt"
    sets = ["scheme=jwt"]
    tampers = [
        Tamper("body", tamper_body, ("body_hash_mismatch",), "body", sdk_detects=False),
        Tamper("signature", lambda r, rng: _set(r, "Authorization", _flip_jwt_sig(r.header("Authorization"))),
               ("signature_mismatch",), "signature"),
        Tamper("stale", stale, ("timestamp_out_of_window",), None),
    ]

    def secret(self, rng):
        return "".join(rng.choice(B64[:62]) for _ in range(50))

    def gen(self, rng, secret, now):
        # vonage-jwt only verifies (verify_signature); webhook tokens are HS256, so the harness mints them with
        # PyJWT (vonage-jwt's own JWT dependency) and the SDK verifier must accept them (self-check).
        import jwt
        body = rjson(rng)
        claims = {"iat": now - rng.randint(0, 200), "jti": str(uuid.UUID(int=rng.getrandbits(128))), "iss": "Vonage",
                  "payload_hash": hashlib.sha256(body.encode()).hexdigest(), "api_key": "a1b2c3d",
                  "application_id": str(uuid.UUID(int=rng.getrandbits(128)))}
        tok = jwt.encode(claims, secret, algorithm="HS256")
        return Req("POST", rurl(rng), [("Content-Type", "application/json"), ("Authorization", "Bearer " + tok)],
                   body.encode(), json_body=True, now=now)

    def sdk_verify(self, r, secret):
        from vonage_jwt.verify_jwt import verify_signature
        auth = r.header("Authorization") or ""
        try:
            return verify_signature(auth.removeprefix("Bearer ").strip(), secret)
        except Exception:
            return False

    def sign_inputs(self, rng, now):
        return rurl(rng), "POST", {"json": rjson(rng)}


def _flip_jwt_sig(auth):
    i = auth.rindex(".") + 2
    return flip_at(auth, i, B64[:62])


class VonageSms(Scheme):
    sdk_checks_freshness = False

    provider = "vonage"

    def __init__(self, method):
        self.method_ = method
        self.name = "vonage/sms-" + method
        self.sets = ["scheme=sms-signature", "signature_method=" + method]
        self.tampers = [
            Tamper("param", self._tamper_param, ("signature_mismatch",), "param"),
            Tamper("signature", self._tamper_sig, ("signature_mismatch",), "signature"),
            Tamper("timestamp", self._tamper_ts, ("signature_mismatch",), "timestamp"),
            Tamper("stale", stale, ("timestamp_out_of_window",), None),
        ]

    def secret(self, rng):
        return "".join(rng.choice(B64[:62]) for _ in range(32))

    @staticmethod
    def params_of(r):
        return list(r.form) if r.form is not None else parse_qsl(urlsplit(r.url).query, keep_blank_values=True)

    def rebuild(self, r, params, rng=None):
        rng = rng or random.Random(0)
        if r.method == "GET":
            base = r.url.split("?")[0]
            return replace(r, url=base + "?" + query_encode(params, rng))
        return replace(r, body=form_encode(params, rng).encode(), form=params)

    def _tamper_param(self, r, rng):
        ps = self.params_of(r)
        cand = [i for i, (k, v) in enumerate(ps) if k not in ("sig", "timestamp") and any(c in LETTERS for c in v)]
        i = rng.choice(cand)
        ps[i] = (ps[i][0], flip_letter(ps[i][1], rng))
        return self.rebuild(r, ps, rng)

    def _tamper_sig(self, r, rng):
        ps = [(k, flip_at(v, 0, HEX) if k == "sig" else v) for k, v in self.params_of(r)]
        return self.rebuild(r, ps, rng)

    def _tamper_ts(self, r, rng):
        ps = [(k, str(int(v) + 1) if k == "timestamp" else v) for k, v in self.params_of(r)]
        return self.rebuild(r, ps, rng)

    def auth(self, secret):
        from vonage_http_client.auth import Auth
        return Auth(api_key="a1b2c3d", signature_secret=secret, signature_method=self.method_)

    def gen(self, rng, secret, now):
        keys = ["msisdn", "to", "messageId", "text", "type", "keyword", "message-timestamp", "api-key", "concat"]
        params = {k: rstr(rng) for k in rng.sample(keys, rng.randint(2, len(keys)))}
        params["timestamp"] = str(now - rng.randint(0, 250))
        sig = self.auth(secret).sign_params(dict(params))
        if rng.random() < 0.3:
            sig = sig.upper()
        items = list(params.items()) + [("sig", sig)]
        rng.shuffle(items)
        url = rurl(rng, query=False)
        if rng.random() < 0.5:
            r = Req("GET", url + "?" + query_encode(items, rng), now=now)
        else:
            r = Req("POST", url, [("Content-Type", "application/x-www-form-urlencoded")],
                    form_encode(items, rng).encode(), form=items, now=now)
        return r

    def sdk_verify(self, r, secret):
        return self.auth(secret).check_signature(dict(self.params_of(r)))

    def sign_inputs(self, rng, now):
        ps = [(k, rstr(rng)) for k in ["msisdn", "to", "text", "type"]]
        return rurl(rng, query=False), "POST", {"form": ps}


class SinchVoice(Scheme):
    sdk_checks_freshness = False

    provider = "sinch"
    name = "sinch/voice"
    APP_KEY = "5a3b1c2d-0000-4000-8000-00000000abcd"
    sets = ["scheme=voice", "app_key=" + APP_KEY]
    tampers = [
        Tamper("body", tamper_body, ("signature_mismatch", "body_hash_mismatch"), "body"),
        Tamper("url", tamper_path, ("signature_mismatch",), "url"),
        Tamper("signature", lambda r, rng: _set(r, "Authorization", flip_at(r.header("Authorization"),
                                                r.header("Authorization").index(":") + 1, B64)),
               ("signature_mismatch",), "signature"),
        Tamper("timestamp", lambda r, rng: _set(r, "x-timestamp", _iso_bump(r.header("x-timestamp"))),
               ("signature_mismatch",), "timestamp"),
        Tamper("stale", stale, ("timestamp_out_of_window",), None),
    ]

    def gen(self, rng, secret, now):
        # @sinch/sdk-client's generateAuthorizationHeader is the SDK's public signing helper (Voice/Verification).
        ct = rng.choice(["application/json", "application/json; charset=utf-8"])
        body = rjson(rng) if rng.random() < 0.95 else ""
        frac = "".join(rng.choice("0123456789") for _ in range(rng.choice([0, 3, 7])))
        ts = datetime.fromtimestamp(now - rng.randint(0, 250), tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")
        ts += ("." + frac if frac else "") + "Z"
        url = rurl(rng, query=False)
        path = urlsplit(url).path
        auth = node().call("sinch_sign", method="POST", body=body, content_type=ct, timestamp=ts, path=path,
                           key=self.APP_KEY, secret=secret)
        return Req("POST", url, [("Content-Type", ct), ("x-timestamp", ts), ("Authorization", auth)], body.encode(),
                   json_body=True, now=now)

    def sdk_verify(self, r, secret):
        return node().call("sinch_validate", key=self.APP_KEY, secret=secret, headers=hdict(r),
                           body=r.body.decode(), path=urlsplit(r.url).path, method=r.method)

    def sign_inputs(self, rng, now):
        return rurl(rng, query=False), "POST", {"json": rjson(rng)}


def _iso_bump(ts):
    return ts[:18] + str((int(ts[18]) + 1) % 10) + ts[19:]


class SinchConversation(Scheme):
    sdk_checks_freshness = False

    provider = "sinch"
    name = "sinch/conversation"
    sets = ["scheme=conversation"]
    tampers = [
        Tamper("body", tamper_body, ("signature_mismatch",), "body"),
        Tamper("signature", tamper_header_sig("x-sinch-webhook-signature", lambda v: 2), ("signature_mismatch",), "signature"),
        Tamper("timestamp", lambda r, rng: _bump_header(r, "x-sinch-webhook-signature-timestamp", 1),
               ("signature_mismatch",), "timestamp"),
        Tamper("nonce", lambda r, rng: _set(r, "x-sinch-webhook-signature-nonce",
                                            flip_at(r.header("x-sinch-webhook-signature-nonce"), 0, B64[:26])),
               ("signature_mismatch",), None),
        Tamper("stale", stale, ("timestamp_out_of_window",), None),
    ]

    def secret(self, rng):
        return "".join(rng.choice(B64[:62]) for _ in range(rng.randint(10, 40)))

    def gen(self, rng, secret, now):
        # sinch-python verifies only; its verifier's own helpers compute_signed_data +
        # calculate_sinch_event_signature produce the signature.
        from sinch.domains.authentication.sinch_events.v1 import authentication_validation as av
        body = rjson(rng)
        nonce = "01" + "".join(rng.choice("0123456789ABCDEFGHJKMNPQRSTVWXYZ") for _ in range(24))
        ts = str(now - rng.randint(0, 250))
        sig = av.calculate_sinch_event_signature(av.compute_signed_data(body, nonce, ts), secret)
        return Req("POST", rurl(rng), [("Content-Type", "application/json"), ("x-sinch-webhook-signature", sig),
                                       ("x-sinch-webhook-signature-nonce", nonce),
                                       ("x-sinch-webhook-signature-timestamp", ts)],
                   body.encode(), json_body=True, now=now)

    def sdk_verify(self, r, secret):
        from sinch.domains.conversation.sinch_events.v1.conversation_sinch_event import ConversationSinchEvent
        return ConversationSinchEvent(secret).validate_authentication_header(hdict(r), r.body)

    def sign_inputs(self, rng, now):
        return rurl(rng), "POST", {"json": rjson(rng)}


class HmacGitHub(Scheme):
    provider = "hmac"
    name = "hmac/github-sha256"
    sets = ["algorithm=sha256", "header=X-Hub-Signature-256", "encoding=hex", "prefix=sha256=", "signed_content=body"]
    tampers = [
        Tamper("body", tamper_body, ("signature_mismatch",), "body"),
        Tamper("signature", tamper_header_sig("X-Hub-Signature-256", lambda v: 7, HEX), ("signature_mismatch",), "signature"),
    ]

    def secret(self, rng):
        return rstr(rng, 5)

    def gen(self, rng, secret, now):
        body = rjson(rng)
        sig = node().call("github_sign", secret=secret, body=body)  # @octokit/webhooks-methods sign()
        return Req("POST", rurl(rng), [("Content-Type", "application/json"), ("X-GitHub-Event", "push"),
                                       ("X-Hub-Signature-256", sig)], body.encode(), json_body=True, now=now)

    def sdk_verify(self, r, secret):
        sig = r.header("X-Hub-Signature-256")
        if sig is None:
            return False
        return node().call("github_verify", secret=secret, body=r.body.decode(), sig=sig)

    def sign_inputs(self, rng, now):
        return rurl(rng), "POST", {"json": rjson(rng)}


class HmacStripe(Scheme):
    provider = "hmac"
    name = "hmac/stripe"
    sets = ["algorithm=sha256", "header=Stripe-Signature", "encoding=hex", "signed_content={timestamp}.{body}",
            "header_format=stripe"]
    tampers = [
        Tamper("body", tamper_body, ("signature_mismatch",), "body"),
        Tamper("signature", tamper_header_sig("Stripe-Signature", lambda v: v.index("v1=") + 3, HEX),
               ("signature_mismatch",), "signature"),
        Tamper("timestamp", lambda r, rng: _set(r, "Stripe-Signature", _stripe_bump(r.header("Stripe-Signature"))),
               ("signature_mismatch",), "timestamp"),
        Tamper("stale", stale, ("timestamp_out_of_window",), None),
    ]

    def secret(self, rng):
        return "whsec_" + "".join(rng.choice(B64[:62]) for _ in range(32))

    def gen(self, rng, secret, now):
        from stripe import WebhookSignature
        body = rjson(rng)
        hdr = WebhookSignature.generate_signature_header(body, secret, timestamp=now - rng.randint(0, 250))
        if rng.random() < 0.3:  # a rolled secret: an extra v1 that does not match, and a v0
            hdr += ",v1=" + rng.randbytes(32).hex() + ",v0=" + rng.randbytes(32).hex()
        return Req("POST", rurl(rng), [("Content-Type", "application/json"), ("Stripe-Signature", hdr)],
                   body.encode(), json_body=True, now=now)

    def sdk_verify(self, r, secret):
        import stripe
        from stripe import WebhookSignature
        with CLOCK, mock.patch.object(stripe._webhook.time, "time", lambda: float(r.now)):
            try:
                return WebhookSignature.verify_header(r.body.decode(), r.header("Stripe-Signature"), secret, 300)
            except stripe.SignatureVerificationError:
                return False

    def sign_inputs(self, rng, now):
        return rurl(rng), "POST", {"json": rjson(rng)}


def _stripe_bump(h):
    parts = h.split(",")
    return ",".join(f"t={int(p[2:]) + 1}" if p.startswith("t=") else p for p in parts)


SCHEMES = [Twilio("HMAC_SHA1"), Twilio("HMAC_SHA256"), SignalWireA(), SignalWireB(), PlivoV3(), PlivoV2(), Telnyx(),
           VonageJwt()] + [VonageSms(m) for m in ("md5", "sha1", "sha256", "sha512")] + \
          [SinchVoice(), SinchConversation(), StandardWebhooks(), HmacGitHub(), HmacStripe()]

# ----------------------------------------------------------------------------------------------------
# tollgate CLI


def tg_verify(s: Scheme, r: Req, secret):
    with tempfile.NamedTemporaryFile("wb", suffix=".http", delete=False) as f:
        f.write(r.raw())
        path = f.name
    try:
        args = [TG, "verify", "--provider", s.provider, "--secret-env", "INTEROP_SECRET"]
        for kv in s.sets:
            args += ["--set", kv]
        args += ["--url", r.url, "--now", str(r.now), "--json", path]
        env = dict(os.environ, INTEROP_SECRET=s.verify_secret(secret))
        p = subprocess.run(args, env=env, capture_output=True, timeout=60)
        try:
            out = json.loads(p.stdout.decode("utf-8", "replace").strip().splitlines()[-1])
        except Exception:
            out = {"stdout": p.stdout.decode("utf-8", "replace")[-500:], "stderr": p.stderr.decode("utf-8", "replace")[-500:]}
        return p.returncode, out, args
    finally:
        os.unlink(path)


def tg_sign(s: Scheme, secret, url, method, inputs, now, tamper=None):
    args = [TG, "sign", "--provider", s.provider, "--secret-env", "INTEROP_SECRET", "--url", url, "--method", method]
    tmp = None
    if "form" in inputs:
        for k, v in inputs["form"]:
            args += ["--form", f"{k}={v}"]
    elif "json" in inputs:
        with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False, encoding="utf-8") as f:
            f.write(inputs["json"])
            tmp = f.name
        args += ["--json-body", tmp]
    for kv in s.sets:
        args += ["--set", kv]
    args += ["--now", str(now)]
    if tamper:
        args += ["--tamper", tamper]
    try:
        p = subprocess.run(args, env=dict(os.environ, INTEROP_SECRET=secret), capture_output=True, timeout=60)
    finally:
        if tmp:
            os.unlink(tmp)
    return p, args


# ----------------------------------------------------------------------------------------------------
# runner


class Stats:
    def __init__(self):
        self.lock = threading.Lock()
        self.rows = {}  # (scheme, direction) -> [accepted, accepted_total, tampers_rejected, tampers_total, failures]
        self.failures = []
        self.passed = 0
        self.failed = 0

    def row(self, s, d):
        return self.rows.setdefault((s, d), [0, 0, 0, 0, 0])

    def ok(self, s, d, kind):
        with self.lock:
            row = self.row(s, d)
            if kind == "accept":
                row[0] += 1; row[1] += 1
            else:
                row[2] += 1; row[3] += 1
            self.passed += 1

    def fail(self, s, d, kind, what):
        with self.lock:
            row = self.row(s, d)
            row[1 if kind == "accept" else 3] += 1
            row[4] += 1
            self.failed += 1
            self.failures.append((s, d, what))


ST = Stats()


def sdk_to_tg_case(s: Scheme, seed: int, i: int):
    try:
        _sdk_to_tg_case(s, seed, i)
    except Exception:
        ST.fail(s.name, "sdk->tg", "accept", {"case": i, "harness": traceback.format_exc()[-1200:]})


def _sdk_to_tg_case(s: Scheme, seed: int, i: int):
    rng = random.Random(f"{seed}/{s.name}/sdk/{i}")
    secret = s.secret(rng)
    now = 1_600_000_000 + rng.randint(0, 10 ** 8)
    d = "sdk->tg"
    try:
        r = s.gen(rng, secret, now)
    except Exception:
        ST.fail(s.name, d, "accept", {"case": i, "harness": traceback.format_exc()[-800:]})
        return
    # harness self-check: the SDK accepts its own request
    if not s.sdk_verify(r, secret):
        ST.fail(s.name, d, "accept", {"case": i, "harness": "SDK rejects its own signed request", "req": r.repro()})
        return
    tampered = []
    for t in s.tampers:
        r2 = t.fn(r, rng)
        if r2 is None:
            continue
        if t.sdk_detects and t.name not in ("stale", "future") and s.sdk_verify(r2, secret):
            ST.fail(s.name, d, "tamper", {"case": i, "tamper": t.name, "harness": "SDK still accepts the tampered request",
                                          "req": r2.repro()})
            continue
        tampered.append((t, r2))
    if SELFTEST:
        ST.ok(s.name, d, "accept")
        for _ in tampered:
            ST.ok(s.name, d, "tamper")
        return
    code, out, args = tg_verify(s, r, secret)
    if code == 0:
        ST.ok(s.name, d, "accept")
    else:
        ST.fail(s.name, d, "accept", {"case": i, "expected": "exit 0", "exit": code, "out": out, "req": r.repro(),
                                      "cmd": " ".join(args[1:-1]) + " FILE",
                                      "secret": s.verify_secret(secret), "sets": s.sets})
    for t, r2 in tampered:
        code, out, args = tg_verify(s, r2, secret)
        if code == 1 and out.get("reason") in t.reasons:
            ST.ok(s.name, d, "tamper")
        else:
            ST.fail(s.name, d, "tamper", {"case": i, "tamper": t.name, "expected": f"exit 1, reason in {t.reasons}",
                                          "exit": code, "out": out, "req": r2.repro(),
                                          "secret": s.verify_secret(secret), "sets": s.sets})


def tg_to_sdk_case(s: Scheme, seed: int, i: int):
    rng = random.Random(f"{seed}/{s.name}/sign/{i}")
    secret = s.secret(rng)
    now = 1_600_000_000 + rng.randint(0, 10 ** 8)
    url, method, inputs = s.sign_inputs(rng, now)
    d = "tg->sdk"
    scheme = urlsplit(url).scheme
    tampers = [t for t in s.tampers if t.sign_flag and t.sdk_detects
               and not (t.sign_flag == "param" and "form" not in inputs)]  # no params to vary in a JSON body
    for t in [None] + tampers:
        kind = "accept" if t is None else "tamper"
        p, args = tg_sign(s, secret, url, method, inputs, now, t.sign_flag if t else None)
        if p.returncode != 0:
            ST.fail(s.name, d, kind, {"case": i, "tamper": t and t.name, "expected": "tollgate sign exit 0",
                                      "exit": p.returncode, "stderr": p.stderr.decode("utf-8", "replace")[-600:],
                                      "args": args})
            continue
        try:
            r = parse_raw(p.stdout, scheme)
            r.now = now
            ok = s.sdk_verify(r, secret)
        except Exception:
            ST.fail(s.name, d, kind, {"case": i, "tamper": t and t.name, "harness": traceback.format_exc()[-800:],
                                      "stdout": p.stdout.decode("utf-8", "replace")[-800:]})
            continue
        if t is not None and t.sign_flag == "timestamp" and not s.sdk_checks_freshness:
            code, out, vargs = tg_verify(s, r, secret)
            if ok and code == 1 and out.get("reason") == "timestamp_out_of_window":
                ST.ok(s.name, d, kind)
            else:
                ST.fail(s.name, d, kind, {"case": i, "tamper": t.name,
                                          "expected": "SDK accepts the stale signature, tollgate verify refuses it",
                                          "sdk_ok": ok, "tollgate_exit": code, "tollgate": out, "args": args})
            continue
        if ok == (t is None):
            ST.ok(s.name, d, kind)
        else:
            ST.fail(s.name, d, kind, {"case": i, "tamper": t and t.name,
                                      "expected": "SDK accepts" if t is None else "SDK rejects",
                                      "args": args, "request": p.stdout.decode("utf-8", "replace")})


# Every SDK module the checks import lazily. They are imported once in the main thread before the
# worker pool starts: concurrent first imports of a namespace package (sinch's) race inside
# importlib and fail with KeyError on a cold interpreter.
SDK_MODULES = [
    "nacl.signing",
    "plivo.utils",
    "plivo.utils.signature_v3",
    "signalwire.core.security.webhook_validator",
    "standardwebhooks.webhooks",
    "stripe",
    "telnyx.lib.webhook_verification",
    "twilio.request_validator",
    "vonage_http_client.auth",
    "vonage_jwt.verify_jwt",
    "jwt",
    "sinch.domains.authentication.sinch_events.v1.authentication_validation",
    "sinch.domains.conversation.sinch_events.v1.conversation_sinch_event",
]


def preload_sdks():
    import importlib

    for name in SDK_MODULES:
        importlib.import_module(name)


def main():
    seed = int(os.environ.get("INTEROP_SEED") or random.SystemRandom().randint(1, 2 ** 31))
    n = int(os.environ.get("INTEROP_N", "120"))
    n_sign = int(os.environ.get("INTEROP_N_SIGN", "25"))
    only = [x for x in os.environ.get("INTEROP_ONLY", "").split(",") if x]
    schemes = [s for s in SCHEMES if not only or any(o in s.name for o in only)]
    print(f"interop: seed={seed} (rerun with INTEROP_SEED={seed}) cases/scheme sdk->tg={n} tg->sdk={n_sign}"
          f"{' SELFTEST (SDK only)' if SELFTEST else ''}", flush=True)
    t0 = time.monotonic()
    jobs = []
    preload_sdks()
    with ThreadPoolExecutor(max_workers=int(os.environ.get("INTEROP_JOBS", "4"))) as ex:
        for s in schemes:
            for i in range(n):
                jobs.append(ex.submit(sdk_to_tg_case, s, seed, i))
            if not SELFTEST:
                for i in range(n_sign):
                    jobs.append(ex.submit(tg_to_sdk_case, s, seed, i))
        for j in jobs:
            j.result()
    # report
    shown = {}
    for s, d, what in ST.failures:
        k = (s, d, what.get("tamper"))
        shown[k] = shown.get(k, 0) + 1
        if shown[k] <= 2:
            print(f"FAIL {s} {d} {json.dumps(what, ensure_ascii=False)}")
    for k, c in shown.items():
        if c > 2:
            print(f"  ... {c - 2} more failures like {k}")
    print()
    print(f"{'provider':<18} {'scheme':<20} {'direction':<9} {'accepted':>10} {'tampers rejected':>17} {'failures':>9}")
    for s in schemes:
        for d in ("sdk->tg", "tg->sdk"):
            if (s.name, d) not in ST.rows:
                continue
            a, at, tr, tt, f = ST.rows[(s.name, d)]
            print(f"{s.provider:<18} {s.name.split('/', 1)[1]:<20} {d:<9} {f'{a}/{at}':>10} {f'{tr}/{tt}':>17} {f:>9}")
    print(f"\n(seed {seed}, {time.monotonic() - t0:.1f}s)")
    counts = os.environ.get("INTEROP_COUNTS_FILE")
    if counts:  # run.sh: gateway_e2e.py runs next and prints the final line with both phases' counts
        with open(counts, "w") as f:
            json.dump({"seed": seed, "passed": ST.passed, "failed": ST.failed}, f)
        print(f"interop cli-phase: {ST.passed} passed, {ST.failed} failed")
    else:
        print(f"interop: {ST.passed} passed, {ST.failed} failed")
    if NODE:
        NODE.p.stdin.close()
    return 1 if ST.failed else 0


if __name__ == "__main__":
    sys.exit(main())
