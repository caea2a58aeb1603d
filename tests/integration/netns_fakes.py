"""The in-namespace side of the credential tests that need non-loopback addresses
(test_credentials_netns.py).

Run as a script (``unshare -n PYTHON netns_fakes.py '<json spec>'``) it brings ``lo``
up, adds addresses to it, starts the fake servers (fake_metadata.py), the traps and
the TCP end of the unix bridge (relays.py), runs the agent, sends the requests and
prints one JSON object (see :func:`netns_main`).  Its agent runner and loopback set-up
are shared with netns_helper.py, the other in-namespace runner.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time

from fake_metadata import FakeContainer, FakeIMDS
from relays import TrapServer, _Forwarder, _unix_connector


SIOCSIFFLAGS, SIOCGIFFLAGS, SIOCSIFADDR, SIOCSIFNETMASK = 0x8914, 0x8913, 0x8916, 0x891C
IFF_UP = 0x1


def _set_up(sock, ifname: bytes):
    import fcntl
    import struct

    ifr = struct.pack("16sh", ifname, 0)
    flags = struct.unpack("16sh", fcntl.ioctl(sock, SIOCGIFFLAGS, ifr)[:18])[1]
    fcntl.ioctl(sock, SIOCSIFFLAGS, struct.pack("16sh", ifname, flags | IFF_UP))


def loopback_up():
    """Bring ``lo`` up: a fresh ``unshare -n`` namespace starts with it down.  Shared
    with netns_helper.py, the other in-namespace runner."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        _set_up(s, b"lo")
    finally:
        s.close()


_alias = [0]


def _add_address(addr):
    """Add addr ("A.B.C.D/32" or "X::Y/128") to lo with ioctls (no iproute2 needed).
    Returns (ok, error text)."""
    import fcntl
    import struct

    ip = addr.split("/")[0]
    try:
        if ":" in ip:
            try:
                with open("/proc/sys/net/ipv6/conf/lo/disable_ipv6", "w") as f:
                    f.write("0")
            except OSError:
                pass
            s6 = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
            try:
                req = struct.pack("16sIi", socket.inet_pton(socket.AF_INET6, ip), 128, socket.if_nametoindex("lo"))
                fcntl.ioctl(s6, SIOCSIFADDR, req)
            finally:
                s6.close()
        else:
            _alias[0] += 1
            name = b"lo:%d" % _alias[0]
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            try:
                def sockaddr(a):
                    return struct.pack("16sH2s4s8s", name, socket.AF_INET, b"\0\0", socket.inet_aton(a), b"\0" * 8)

                fcntl.ioctl(s, SIOCSIFADDR, sockaddr(ip))
                fcntl.ioctl(s, SIOCSIFNETMASK, sockaddr("255.255.255.255"))
                _set_up(s, name)
            finally:
                s.close()
        return True, ""
    except OSError as e:
        return False, repr(e)


def _cycle(items):
    lock = threading.Lock()
    state = {"i": 0}

    def fn():
        with lock:
            i = min(state["i"], len(items) - 1)
            state["i"] += 1
        return tuple(items[i])

    return fn


def run_agent(spec, env):
    """Run the agent inside the namespace, send it spec["requests"] and stop it.

    Shared by both in-namespace runners (this file's :func:`netns_main` and
    netns_helper.py), which start the agent, wait for its listening line, send
    the requests and stop it in exactly the same way.  Spec keys used: agent, cwd,
    config (TOML text or None = no --config), requests ([[path, headers]]),
    start_timeout.  Returns {rc (None while it was running), port, stdout, stderr,
    responses ([[status, body, seconds]])}."""
    argv = [spec["agent"]]
    if spec.get("config") is not None:
        cfg = os.path.join(spec["cwd"], "agent.toml")
        with open(cfg, "w") as f:
            f.write(spec["config"])
        argv += ["--config", cfg]
    proc = subprocess.Popen(argv, cwd=spec["cwd"], env=env, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    so, se = [], []

    def pump(stream, sink):
        for line in iter(stream.readline, b""):
            sink.append(line.decode("utf-8", "replace"))

    readers = [threading.Thread(target=pump, args=(proc.stdout, so), daemon=True),
               threading.Thread(target=pump, args=(proc.stderr, se), daemon=True)]
    for t in readers:
        t.start()
    port = None
    deadline = time.monotonic() + spec.get("start_timeout", 10)
    while time.monotonic() < deadline:
        m = re.search(r"listening on http://127\.0\.0\.1:(\d+)", "".join(so))
        if m:
            port = int(m.group(1))
            break
        if proc.poll() is not None:
            break
        time.sleep(0.02)
    responses = []
    if port is not None:
        for path, headers in spec.get("requests", []):
            t0 = time.monotonic()
            try:
                c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
                c.request("GET", path, headers=headers)
                r = c.getresponse()
                responses.append([r.status, r.read().decode("utf-8", "replace"), time.monotonic() - t0])
                c.close()
            except OSError as e:
                responses.append([None, repr(e), time.monotonic() - t0])
    rc = proc.poll()
    if rc is None:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    for t in readers:
        t.join(5)
    return {"rc": rc, "port": port, "stdout": "".join(so), "stderr": "".join(se), "responses": responses}


def netns_main(spec):
    """Spec keys: agent, cwd, config (TOML text), env (dict; "{SM}" -> the in-namespace
    end of the bridge, "{S0}", "{S1}".. -> the servers' URLs), bridge (unix socket path
    or null), addresses (["169.254.170.2/32", ...] added to lo), servers ([{kind:
    container|imds|trap, host, port, creds: [[akid, secret, token], ...], lifetime,
    auth, path, token_mode, region}]), requests ([[path, headers]]), start_timeout.

    Prints JSON: rc, port, stdout, stderr, addresses ({addr: [ok, err]}),
    responses ([[status, body, seconds]]), servers ([{calls: [...], connections: n}])."""
    loopback_up()
    out = {"addresses": {}}
    for a in spec.get("addresses", []):
        out["addresses"][a] = list(_add_address(a))
    servers = []
    for s in spec.get("servers", []):
        kind = s["kind"]
        host, port = s.get("host", "127.0.0.1"), s.get("port", 0)
        if kind == "trap":
            servers.append(TrapServer(host, port))
        elif kind == "container":
            servers.append(FakeContainer(_cycle(s["creds"]), path=s.get("path", "/creds"),
                                         expected_auth=s.get("auth"), lifetime=s.get("lifetime"), host=host, port=port))
        elif kind == "imds":
            servers.append(FakeIMDS(_cycle(s["creds"]) if s.get("creds") else None, region=s.get("region"),
                                    token_mode=s.get("token_mode", "v2"), lifetime=s.get("lifetime"),
                                    host=host, port=port))
        else:
            raise ValueError(kind)
    fwd = None
    subst = {}
    if spec.get("bridge"):
        ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        ls.bind(("127.0.0.1", 0))
        ls.listen(64)
        subst["{SM}"] = f"http://127.0.0.1:{ls.getsockname()[1]}"
        fwd = _Forwarder(ls, _unix_connector(spec["bridge"]))
    for i, s in enumerate(servers):
        if isinstance(s, TrapServer):
            subst[f"{{S{i}}}"] = f"127.0.0.1:{s.port}"
        else:
            subst[f"{{S{i}}}"] = s.url

    def sub(v):
        for k, r in subst.items():
            v = v.replace(k, r)
        return v

    env = {k: sub(v) for k, v in spec["env"].items()}
    ran = run_agent(spec, env)
    srv_out = []
    for s in servers:
        if isinstance(s, TrapServer):
            srv_out.append({"connections": s.connections, "calls": []})
        else:
            srv_out.append({"connections": None, "calls": s.requests()})
        s.close()
    if fwd:
        fwd.close()
    out.update(ran)
    out["servers"] = srv_out
    print(json.dumps(out))


if __name__ == "__main__":
    netns_main(json.loads(sys.argv[1]))
