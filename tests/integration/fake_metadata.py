"""Fake credential endpoints for the credential-source tests (test_credentials_*.py).

Each is a fake_http._Base (threaded, records its calls, can be taken down, ends its
hangs on ``close()``) that hands out the credentials a callable returns, with an
Expiration `lifetime` seconds ahead, and can go down by itself after serving
`down_after` of them.

FakeIMDS         EC2 instance metadata service.  Enforces IMDSv2 by default (a GET
                 without a valid token from ``PUT /latest/api/token`` is answered 401;
                 the PUT needs ``x-aws-ec2-metadata-token-ttl-seconds``).  Other token
                 modes: an HTTP status for the PUT (403/404/405 = IMDSv1 allowed, GETs
                 without a token are then served), or "hang".
FakeContainer    ECS / EKS Pod Identity credential endpoint; checks ``Authorization``.
FakeSTS          AssumeRoleWithWebIdentity endpoint (query protocol, XML replies); its
                 credentials come from a callable (the tests mint real ones with moto's
                 signed AssumeRole).

The recording proxy and the unix bridge are in relays.py; netns_fakes.py runs these
fakes inside a network namespace.
"""

from __future__ import annotations

import collections
import json
import secrets
import time
from urllib.parse import parse_qs, urlsplit
from xml.sax.saxutils import escape

from fake_http import HANG_MAX, _Base


def iso8601(epoch: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


def expiration_after(lifetime: float | None) -> float:
    """An expiry `lifetime` seconds from now, rounded UP to a whole second (the wire
    format has whole seconds), so the credentials live at least `lifetime` s."""
    if lifetime is None:
        lifetime = 6 * 3600
    return float(int(time.time() + lifetime) + 1)


class _CredsMixin:
    """Hands out credentials from `creds_fn()` -> (akid, secret, token) with an
    Expiration `lifetime` seconds ahead; optionally goes down after `down_after`
    successful credential replies."""

    def _init_creds(self, creds_fn, lifetime, down_after, down_mode):
        self.creds_fn = creds_fn
        self.lifetime = lifetime
        self.down_after = down_after
        self.down_mode = down_mode
        self.served = []  # dicts: akid, secret, token, expiration (epoch), time

    def _next_creds(self):
        akid, secret, token = self.creds_fn()
        exp = expiration_after(self.lifetime)
        rec = {"akid": akid, "secret": secret, "token": token, "expiration": exp, "time": time.time()}
        with self.lock:
            self.served.append(rec)
            n = len(self.served)
        return rec, n

    def _after_served(self, n):
        if self.down_after is not None and n >= self.down_after and self.down is None:
            self.go_down(self.down_mode)

    def served_count(self) -> int:
        with self.lock:
            return len(self.served)

    def expiry_of(self, akid):
        with self.lock:
            for s in self.served:
                if s["akid"] == akid:
                    return s["expiration"]
        return None


# --------------------------------------------------------------------------- IMDS

IMDS_TOKEN_PATH = "/latest/api/token"
IMDS_CREDS_PATH = "/latest/meta-data/iam/security-credentials/"
IMDS_REGION_PATH = "/latest/meta-data/placement/region"


class FakeIMDS(_Base, _CredsMixin):
    """token_mode: "v2" (IMDSv2 enforced), an int status for the token PUT (403/404/405:
    the instance allows IMDSv1, tokenless GETs are served; 500 likewise, to catch a
    fallback that must not happen), or "hang" (the PUT gets no answer: what a container
    behind an extra hop sees with hop limit 1; tokenless GETs are served)."""

    def __init__(self, creds_fn=None, role="sma-test-role", region=None, token_mode="v2", lifetime=None,
                 down_after=None, down_mode="refuse", host="127.0.0.1", port=0):
        self.role = role
        self.region = region
        self.token_mode = token_mode
        self.tokens = {}  # token -> monotonic expiry
        self._init_creds(creds_fn, lifetime, down_after, down_mode)
        super().__init__(host, port)

    def invalidate_tokens(self):
        with self.lock:
            self.tokens.clear()

    def _token_state(self, h):
        tok = h.headers.get("x-aws-ec2-metadata-token")
        if tok is None:
            return "none"
        with self.lock:
            exp = self.tokens.get(tok)
        return "valid" if exp is not None and exp > time.monotonic() else "invalid"

    def _handle(self, h):
        self._read_body(h)
        if self._outage(h):
            return
        path = urlsplit(h.path).path
        if h.command == "PUT" and path == IMDS_TOKEN_PATH:
            rec = self._record(h, kind="token")
            mode = self.token_mode
            if mode == "hang":
                rec["status"] = "hang"
                self.stop.wait(HANG_MAX)
                h.close_connection = True
                return
            if isinstance(mode, int):
                rec["status"] = mode
                self._send(h, mode, "")
                return
            if "x-forwarded-for" in {k.lower() for k in h.headers.keys()}:
                rec["status"] = 403
                self._send(h, 403, "")
                return
            ttl = h.headers.get("x-aws-ec2-metadata-token-ttl-seconds")
            try:
                ttl_n = int(ttl)
            except (TypeError, ValueError):
                ttl_n = -1
            if not 1 <= ttl_n <= 21600:
                rec["status"] = 400
                self._send(h, 400, "")
                return
            tok = "imds-" + secrets.token_urlsafe(24)
            with self.lock:
                self.tokens[tok] = time.monotonic() + ttl_n
            rec["status"] = 200
            rec["token"] = tok
            self._send(h, 200, tok, headers={"x-aws-ec2-metadata-token-ttl-seconds": str(ttl_n)})
            return
        if h.command != "GET":
            rec = self._record(h, kind="other")
            rec["status"] = 405
            self._send(h, 405, "")
            return
        state = self._token_state(h)
        rec = self._record(h, kind="get", token_state=state)
        if state == "invalid" or (state == "none" and self.token_mode == "v2"):
            rec["status"] = 401
            self._send(h, 401, "")
            return
        if path in (IMDS_CREDS_PATH, IMDS_CREDS_PATH.rstrip("/")):
            if self.role is None or self.creds_fn is None:
                rec["status"] = 404
                self._send(h, 404, "")
                return
            rec["status"] = 200
            self._send(h, 200, self.role)
            return
        if self.role is not None and self.creds_fn is not None and path == IMDS_CREDS_PATH + self.role:
            c, n = self._next_creds()
            doc = {
                "Code": "Success",
                "LastUpdated": iso8601(time.time()),
                "Type": "AWS-HMAC",
                "AccessKeyId": c["akid"],
                "SecretAccessKey": c["secret"],
                "Token": c["token"],
                "Expiration": iso8601(c["expiration"]),
            }
            rec["status"] = 200
            self._send(h, 200, json.dumps(doc, indent=2))
            self._after_served(n)
            return
        if path == IMDS_REGION_PATH and self.region is not None:
            rec["status"] = 200
            self._send(h, 200, self.region)
            return
        rec["status"] = 404
        self._send(h, 404, "")

    # ---- inspection helpers
    def token_puts(self):
        return [c for c in self.requests() if c.get("kind") == "token"]

    def gets(self):
        return [c for c in self.requests() if c.get("kind") == "get"]

    def creds_gets(self):
        return [c for c in self.gets() if urlsplit(c["path"]).path.startswith(IMDS_CREDS_PATH.rstrip("/"))]

    def region_gets(self):
        return [c for c in self.gets() if urlsplit(c["path"]).path == IMDS_REGION_PATH]


# --------------------------------------------------------------------------- container


class FakeContainer(_Base, _CredsMixin):
    """GET `path` -> credentials JSON. `expected_auth` (if not None) must equal the
    Authorization header, else 401.  `script(500, ...)` queues one-shot statuses."""

    def __init__(self, creds_fn=None, path="/creds", expected_auth=None, lifetime=None, down_after=None,
                 down_mode="refuse", host="127.0.0.1", port=0, role_arn="arn:aws:iam::123456789012:role/sma-test"):
        self.path = path
        self.expected_auth = expected_auth
        self.role_arn = role_arn
        self.queue = collections.deque()
        self.delay = 0.0  # seconds before each credentials answer
        self._init_creds(creds_fn, lifetime, down_after, down_mode)
        super().__init__(host, port)

    def script(self, *statuses):
        with self.lock:
            self.queue.extend(statuses)

    def _handle(self, h):
        self._read_body(h)
        if self._outage(h):
            return
        auth = h.headers.get("Authorization")
        rec = self._record(h, auth=auth)
        if h.command != "GET" or h.path != self.path:
            rec["status"] = 404
            self._send(h, 404, json.dumps({"message": "not found"}), "application/json")
            return
        with self.lock:
            scripted = self.queue.popleft() if self.queue else None
        if scripted is not None:
            rec["status"] = scripted
            self._send(h, scripted, json.dumps({"code": "Scripted", "message": f"scripted {scripted}"}),
                       "application/json")
            return
        if self.expected_auth is not None and auth != self.expected_auth:
            rec["status"] = 401
            self._send(h, 401, json.dumps({"code": "AccessDenied", "message": "bad authorization token"}),
                       "application/json")
            return
        if self.delay:
            self.stop.wait(self.delay)
        c, n = self._next_creds()
        doc = {
            "RoleArn": self.role_arn,
            "AccessKeyId": c["akid"],
            "SecretAccessKey": c["secret"],
            "Token": c["token"],
            "Expiration": iso8601(c["expiration"]),
        }
        rec["status"] = 200
        self._send(h, 200, json.dumps(doc), "application/json")
        self._after_served(n)

    def auths(self):
        return [c["auth"] for c in self.requests() if "auth" in c]


# --------------------------------------------------------------------------- STS (web identity)


def _sts_error(code, message, status=400):
    body = (
        '<ErrorResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/"><Error><Type>Sender</Type>'
        f"<Code>{escape(code)}</Code><Message>{escape(message)}</Message></Error>"
        "<RequestId>c6104cbe-af31-11e0-8154-cbc7ccf896c7</RequestId></ErrorResponse>"
    )
    return status, body


class FakeSTS(_Base, _CredsMixin):
    """AssumeRoleWithWebIdentity only.  `accept_tokens` (set) = web identity tokens
    accepted (None = any); `role_arn` must match.  Records params and whether the call
    was signed (it must not be)."""

    def __init__(self, creds_fn, role_arn, accept_tokens=None, lifetime=None, down_after=None,
                 down_mode="refuse", host="127.0.0.1", port=0):
        self.role_arn = role_arn
        self.accept_tokens = accept_tokens
        self._init_creds(creds_fn, lifetime, down_after, down_mode)
        super().__init__(host, port)

    def _handle(self, h):
        raw = self._read_body(h)
        if self._outage(h):
            return
        q = urlsplit(h.path).query
        params = {k: v[0] for k, v in parse_qs(q).items()}
        params.update({k: v[0] for k, v in parse_qs(raw.decode("utf-8", "replace")).items()})
        rec = self._record(h, params=params, signed="authorization" in {k.lower() for k in h.headers.keys()})
        action = params.get("Action")
        if action != "AssumeRoleWithWebIdentity":
            status, body = _sts_error("InvalidAction", f"fake STS does not do {action}")
        elif rec["signed"]:
            status, body = _sts_error("InvalidParameterValue", "AssumeRoleWithWebIdentity must not be signed")
        elif params.get("RoleArn") != self.role_arn:
            status, body = _sts_error("AccessDenied", f"unexpected role {params.get('RoleArn')}", 403)
        elif not params.get("RoleSessionName"):
            status, body = _sts_error("ValidationError", "RoleSessionName missing")
        elif self.accept_tokens is not None and params.get("WebIdentityToken") not in self.accept_tokens:
            status, body = _sts_error("InvalidIdentityToken", "token not accepted")
        else:
            c, n = self._next_creds()
            sess = escape(params["RoleSessionName"])
            body = (
                '<AssumeRoleWithWebIdentityResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">'
                "<AssumeRoleWithWebIdentityResult>"
                "<SubjectFromWebIdentityToken>system:serviceaccount:ns:sma</SubjectFromWebIdentityToken>"
                "<Audience>sts.amazonaws.com</Audience>"
                f"<AssumedRoleUser><Arn>{escape(self.role_arn.replace(':iam:', ':sts:').replace(':role/', ':assumed-role/'))}/{sess}</Arn>"
                f"<AssumedRoleId>AROAEXAMPLE:{sess}</AssumedRoleId></AssumedRoleUser>"
                "<Credentials>"
                f"<SessionToken>{escape(c['token'])}</SessionToken>"
                f"<SecretAccessKey>{escape(c['secret'])}</SecretAccessKey>"
                f"<Expiration>{iso8601(c['expiration'])}</Expiration>"
                f"<AccessKeyId>{escape(c['akid'])}</AccessKeyId>"
                "</Credentials>"
                "<SourceIdentity></SourceIdentity>"
                "<Provider>oidc.example</Provider>"
                "</AssumeRoleWithWebIdentityResult>"
                "<ResponseMetadata><RequestId>ad4156e9-bce1-11e2-82e6-6b6efEXAMPLE</RequestId></ResponseMetadata>"
                "</AssumeRoleWithWebIdentityResponse>"
            )
            rec["status"] = 200
            self._send(h, 200, body, "text/xml")
            self._after_served(n)
            return
        rec["status"] = status
        self._send(h, status, body, "text/xml")

    def tokens_seen(self):
        return [c["params"].get("WebIdentityToken") for c in self.requests() if "params" in c]
