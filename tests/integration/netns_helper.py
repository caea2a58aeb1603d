"""Run the agent inside a fresh network namespace that has only loopback.

Used for start-up paths that could otherwise reach outside the machine (the default
port 2773, STS credential validation, the region/credential chains that end at
IMDS).  Invoked by the tests as:

    unshare -n PYTHON netns_helper.py '<json spec>'

Spec keys: agent (path), cwd, config (TOML text or null = no --config),
env (dict; the string "{FAKE}" in values is replaced by the in-namespace fake
server's URL), sts ("ok" | "deny"), requests ([[path, headers], ...]),
start_timeout (s).

Prints one JSON object: rc (None while it was running), port, stdout, stderr,
responses ([[status, body], ...]), sts_calls, sm_calls.
"""

import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

# Run as a script, this file's directory is on sys.path: the agent runner and the
# loopback set-up are the ones netns_fakes.py, the credential tests' in-namespace
# runner, uses.
from netns_fakes import loopback_up, run_agent


STS_OK = (
    '<GetCallerIdentityResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">'
    "<GetCallerIdentityResult><Arn>arn:aws:iam::123456789012:user/admin</Arn>"
    "<UserId>AIDAEXAMPLE</UserId><Account>123456789012</Account></GetCallerIdentityResult>"
    "<ResponseMetadata><RequestId>r</RequestId></ResponseMetadata></GetCallerIdentityResponse>"
)
STS_DENY = (
    '<ErrorResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/"><Error><Type>Sender</Type>'
    "<Code>InvalidClientTokenId</Code><Message>The security token included in the request is invalid.</Message>"
    "</Error><RequestId>r</RequestId></ErrorResponse>"
)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *a):
        pass

    def do_POST(self):
        n = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(n) if n else b""
        target = self.headers.get("X-Amz-Target") or ""
        st = self.server.state
        if "GetCallerIdentity" in body.decode("utf-8", "replace"):
            st["sts_calls"] += 1
            if st["sts"] == "ok":
                self._send(200, STS_OK, "text/xml")
            else:
                self._send(403, STS_DENY, "text/xml")
            return
        st["sm_calls"] += 1
        try:
            req = json.loads(body or b"{}")
        except ValueError:
            req = {}
        name = req.get("SecretId", "")
        if target.endswith("GetSecretValue"):
            doc = {
                "ARN": f"arn:aws:secretsmanager:us-east-1:123456789012:secret:{name}-AbCdEf",
                "Name": name,
                "VersionId": "11111111-1111-1111-1111-111111111111",
                "SecretString": f"value-of-{name}",
                "VersionStages": ["AWSCURRENT"],
                "CreatedDate": 1523477145.713,
            }
            self._send(200, json.dumps(doc), "application/x-amz-json-1.1")
        else:
            self._send(400, json.dumps({"__type": "UnknownOperationException", "message": target}),
                       "application/x-amz-json-1.1")

    def _send(self, status, text, ctype):
        data = text.encode()
        self.send_response_only(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def main():
    spec = json.loads(sys.argv[1])
    loopback_up()
    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    srv.daemon_threads = True
    srv.state = {"sts": spec.get("sts", "ok"), "sts_calls": 0, "sm_calls": 0}
    threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True).start()
    fake = f"http://127.0.0.1:{srv.server_address[1]}"
    env = {k: v.replace("{FAKE}", fake) for k, v in spec["env"].items()}
    ran = run_agent(spec, env)
    srv.shutdown()
    srv.server_close()
    # This runner's replies carry no timings: [[status, body], ...].
    ran["responses"] = [r[:2] for r in ran["responses"]]
    ran.update({"sts_calls": srv.state["sts_calls"], "sm_calls": srv.state["sm_calls"]})
    print(json.dumps(ran))


if __name__ == "__main__":
    main()
