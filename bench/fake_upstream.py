#!/usr/bin/env python3
"""A small, fast fake AWS Secrets Manager for benchmarks and soak runs.

Standard library only. Listens on 127.0.0.1 and answers:

  POST /   X-Amz-Target: secretsmanager.GetSecretValue | secretsmanager.DescribeSecret
           | secretsmanager.BatchGetSecretValue (by SecretIdList; Filters match nothing)
           (JSON 1.1; signatures are not checked). Every SecretId exists, except
           ids starting with "missing" (400 ResourceNotFoundException, or an
           Errors entry in a batch).
  POST /   Action=GetCallerIdentity (STS query protocol), for agents that
           validate credentials at start.
  GET  /creds            container-endpoint credentials (AWS_CONTAINER_CREDENTIALS_FULL_URI)
                         that expire after --creds-ttl seconds.
  GET  /_fake/stats      JSON counters: calls per operation and per secret, faults injected.
  POST /_fake/reset      zero the counters.
  POST /_fake/config     JSON body, any subset of the fault settings below; answers the
                         settings now in force.

Fault settings (also CLI flags, e.g. --error-rate 0.05):
  delay_ms          fixed delay before every Secrets Manager answer
  error_rate        fraction of calls answered 500 InternalServiceError
  throttle_rate     fraction answered 400 ThrottlingException
  spike_rate        fraction delayed by spike_seconds before a normal answer
  spike_seconds     length of a latency spike (default 2)
  drop_rate         fraction whose connection is closed without an answer
  rotate_rate       fraction of DescribeSecret calls that first give the secret a new
                    version (so the agent must fetch it again with GetSecretValue)
  creds_error_rate  fraction of /creds calls answered 500
  creds_ttl         lifetime of handed-out credentials in seconds (default 3600)

Run:  python3 bench/fake_upstream.py --port 0
It prints one line "fake upstream listening on http://127.0.0.1:PORT" when ready
(https:// with --tls CERT KEY).
"""

import argparse
import json
import random
import ssl
import sys
import threading
import time
from collections import Counter
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

ACCOUNT = "123456789012"
CREATED = 1795900097.0

FAULT_KEYS = {
    "delay_ms": float,
    "error_rate": float,
    "throttle_rate": float,
    "spike_rate": float,
    "spike_seconds": float,
    "drop_rate": float,
    "rotate_rate": float,
    "creds_error_rate": float,
    "creds_ttl": float,
}


class State:
    """Counters and fault settings, shared by all handler threads."""

    def __init__(self, region, faults):
        self.region = region
        self.lock = threading.Lock()
        self.faults = faults
        self.reset()
        # Credentials handed out by /creds: access key id -> expiry (epoch seconds).
        self.issued = {}
        self.issued_count = 0
        self.versions = Counter()  # secret id -> rotations so far

    def reset(self):
        with self.lock:
            self.ops = Counter()
            self.by_secret = Counter()
            self.injected = Counter()
            self.keys = Counter()  # "known", "expired", "unknown" access keys seen

    def count(self, op, secret_id):
        with self.lock:
            self.ops[op] += 1
            if secret_id is not None:
                self.by_secret[op + " " + secret_id] += 1

    def pick_fault(self):
        """None, or one of "error", "throttle", "spike", "drop"."""
        f = self.faults
        r = random.random()
        for name, key in (("error", "error_rate"), ("throttle", "throttle_rate"),
                          ("spike", "spike_rate"), ("drop", "drop_rate")):
            r -= f[key]
            if r < 0:
                with self.lock:
                    self.injected[name] += 1
                return name
        return None

    def version_id(self, secret_id, op):
        """The secret's current VersionId; DescribeSecret may rotate it first."""
        with self.lock:
            if op == "DescribeSecret" and random.random() < self.faults["rotate_rate"]:
                self.versions[secret_id] += 1
                self.injected["rotate"] += 1
            return "00000000-0000-4000-8000-%012d" % self.versions[secret_id]

    def issue_credentials(self):
        with self.lock:
            self.issued_count += 1
            key = "ASIAFAKE%012d" % self.issued_count
            expiry = time.time() + self.faults["creds_ttl"]
            self.issued[key] = expiry
        return key, expiry

    def check_key(self, authorization):
        """Classifies the access key of a SigV4 Authorization header."""
        key = ""
        marker = "Credential="
        if marker in authorization:
            key = authorization.split(marker, 1)[1].split("/", 1)[0]
        with self.lock:
            if not self.issued:
                return  # static credentials: nothing to check
            expiry = self.issued.get(key)
            kind = "unknown" if expiry is None else ("expired" if expiry < time.time() else "known")
            self.keys[kind] += 1

    def stats(self):
        with self.lock:
            return {
                "ops": dict(self.ops),
                "by_secret": dict(self.by_secret),
                "injected": dict(self.injected),
                "keys": dict(self.keys),
                "credentials_issued": self.issued_count,
                "faults": dict(self.faults),
            }


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the agents' HTTP clients expect
    # Head and body go out in two writes: with Nagle's algorithm the body waits
    # for the client's delayed ACK, 40 ms a call.
    disable_nagle_algorithm = True
    server_version = "fake-secretsmanager"
    sys_version = ""

    def log_message(self, *args):  # quiet: a benchmark makes thousands of calls
        pass

    @property
    def state(self):
        return self.server.state

    def reply(self, status, body, content_type="application/x-amz-json-1.1"):
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("x-amzn-RequestId", "00000000-0000-0000-0000-000000000000")
        self.end_headers()
        self.wfile.write(data)

    def read_body(self):
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def do_GET(self):
        path = self.path.split("?", 1)[0]
        if path == "/_fake/stats":
            self.reply(200, self.state.stats(), "application/json")
        elif path == "/creds":
            self.creds()
        else:
            self.reply(404, {"message": "not found"}, "application/json")

    def do_POST(self):
        body = self.read_body()
        path = self.path.split("?", 1)[0]
        if path == "/_fake/reset":
            self.state.reset()
            self.reply(200, {"ok": True}, "application/json")
        elif path == "/_fake/config":
            self.configure(body)
        elif b"Action=GetCallerIdentity" in body:
            self.caller_identity()
        else:
            self.secrets_manager(body)

    def configure(self, body):
        try:
            changes = json.loads(body or b"{}")
            for key, value in changes.items():
                if key not in FAULT_KEYS:
                    raise ValueError("unknown setting " + key)
                self.state.faults[key] = FAULT_KEYS[key](value)
        except (ValueError, TypeError, AttributeError) as e:
            self.reply(400, {"message": str(e)}, "application/json")
            return
        self.reply(200, self.state.faults, "application/json")

    def creds(self):
        with self.state.lock:
            self.state.ops["creds"] += 1
        if random.random() < self.state.faults["creds_error_rate"]:
            with self.state.lock:
                self.state.injected["creds_error"] += 1
            self.reply(500, {"message": "injected credentials failure"}, "application/json")
            return
        key, expiry = self.state.issue_credentials()
        stamp = datetime.fromtimestamp(expiry, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        self.reply(200, {
            "AccessKeyId": key,
            "SecretAccessKey": "fake-secret-" + key,
            "Token": "fake-session-" + key,
            "Expiration": stamp,
        }, "application/json")

    def caller_identity(self):
        self.state.count("GetCallerIdentity", None)
        xml = (
            '<GetCallerIdentityResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">'
            "<GetCallerIdentityResult><Arn>arn:aws:iam::%s:user/bench</Arn>"
            "<UserId>AIDAFAKE</UserId><Account>%s</Account></GetCallerIdentityResult>"
            "<ResponseMetadata><RequestId>0</RequestId></ResponseMetadata>"
            "</GetCallerIdentityResponse>" % (ACCOUNT, ACCOUNT)
        ).encode()
        self.reply(200, xml, "text/xml")

    def secrets_manager(self, body):
        target = self.headers.get("X-Amz-Target", "")
        op = target.rsplit(".", 1)[-1]
        try:
            request = json.loads(body or b"{}")
            secret_id = request.get("SecretId", "")
        except (ValueError, AttributeError):
            self.reply(400, {"__type": "SerializationException", "message": "bad JSON"})
            return
        if op == "BatchGetSecretValue":
            ids = request.get("SecretIdList") or []
            self.state.count(op, None)
            for one in ids:
                self.state.count("batched", one)
            secret_id = ""
        else:
            self.state.count(op, secret_id)
        self.state.check_key(self.headers.get("Authorization", ""))

        faults = self.state.faults
        if faults["delay_ms"] > 0:
            time.sleep(faults["delay_ms"] / 1000)
        fault = self.state.pick_fault()
        if fault == "error":
            self.reply(500, {"__type": "InternalServiceError", "message": "injected failure"})
            return
        if fault == "throttle":
            self.reply(400, {"__type": "ThrottlingException", "message": "Rate exceeded"})
            return
        if fault == "drop":
            self.close_connection = True
            return
        if fault == "spike":
            time.sleep(faults["spike_seconds"])

        if op == "BatchGetSecretValue":
            self.batch(ids)
            return
        if secret_id.startswith("missing"):
            self.reply(400, {"__type": "ResourceNotFoundException",
                             "message": "Secrets Manager can't find the specified secret."})
            return
        arn = self.arn(secret_id)
        version = self.state.version_id(secret_id, op)
        if op == "GetSecretValue":
            self.reply(200, self.value(secret_id, version))
        elif op == "DescribeSecret":
            self.reply(200, {
                "ARN": arn,
                "Name": secret_id,
                "VersionIdsToStages": {version: ["AWSCURRENT"]},
                "CreatedDate": CREATED,
            })
        else:
            self.reply(400, {"__type": "UnknownOperationException", "message": target})


    def arn(self, secret_id):
        return "arn:aws:secretsmanager:%s:%s:secret:%s-AbCdEf" % (self.state.region, ACCOUNT, secret_id)

    def value(self, secret_id, version):
        return {
            "ARN": self.arn(secret_id),
            "Name": secret_id,
            "VersionId": version,
            "SecretString": json.dumps({"username": "bench", "password": "p4ss-" + version}),
            "VersionStages": ["AWSCURRENT"],
            "CreatedDate": CREATED,
        }

    def batch(self, ids):
        values, errors = [], []
        for one in ids:
            if one.startswith("missing"):
                errors.append({"SecretId": one, "ErrorCode": "ResourceNotFoundException",
                               "Message": "Secrets Manager can't find the specified secret."})
            else:
                values.append(self.value(one, self.state.version_id(one, "BatchGetSecretValue")))
        self.reply(200, {"SecretValues": values, "Errors": errors})


class Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 1024  # 100 concurrent cold misses must not overflow the backlog


def main():
    parser = argparse.ArgumentParser(description="Fake Secrets Manager for benchmarks")
    parser.add_argument("--port", type=int, default=0, help="0 = let the OS pick")
    parser.add_argument("--region", default="us-east-1")
    parser.add_argument("--delay-ms", type=float, default=0)
    parser.add_argument("--error-rate", type=float, default=0)
    parser.add_argument("--throttle-rate", type=float, default=0)
    parser.add_argument("--spike-rate", type=float, default=0)
    parser.add_argument("--spike-seconds", type=float, default=2)
    parser.add_argument("--drop-rate", type=float, default=0)
    parser.add_argument("--rotate-rate", type=float, default=0)
    parser.add_argument("--creds-error-rate", type=float, default=0)
    parser.add_argument("--creds-ttl", type=float, default=3600)
    parser.add_argument("--tls", nargs=2, metavar=("CERT", "KEY"),
                        help="serve HTTPS with this PEM certificate chain and key")
    args = parser.parse_args()

    faults = {key: getattr(args, key) for key in FAULT_KEYS}
    server = Server(("127.0.0.1", args.port), Handler)
    server.state = State(args.region, faults)
    scheme = "http"
    if args.tls:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(*args.tls)
        # The handshake on the handler's thread, not in accept: one client
        # that connects and says nothing must not hold the others up.
        server.socket = context.wrap_socket(server.socket, server_side=True, do_handshake_on_connect=False)
        scheme = "https"
    print("fake upstream listening on %s://127.0.0.1:%d" % (scheme, server.server_address[1]), flush=True)
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    sys.exit(main())
