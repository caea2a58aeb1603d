"""Helpers shared by bench.py and soak.py: start and stop processes, talk HTTP
on loopback, read /proc. Standard library only."""

import atexit
import http.client
import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
TOKEN_HEADER = "X-Aws-Parameters-Secrets-Token"

# Every process we start, so that all of them are stopped however we exit.
_children = []


def _stop_children():
    for proc in reversed(_children):
        if proc.poll() is None:
            proc.terminate()
    deadline = time.monotonic() + 3
    for proc in _children:
        try:
            proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _on_signal(signum, _frame):
    raise SystemExit(128 + signum)  # runs the finally blocks and atexit


atexit.register(_stop_children)
signal.signal(signal.SIGTERM, _on_signal)
signal.signal(signal.SIGHUP, _on_signal)


def spawn(cmd, log_path, env=None, cwd=None):
    """Starts cmd with stdout+stderr to log_path; it is stopped when we exit."""
    log = open(log_path, "ab")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            env=env, cwd=cwd)
    log.close()
    _children.append(proc)
    return proc


def stop(proc, timeout=5):
    """SIGTERM, then SIGKILL after timeout. Returns the exit code."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


def on_cpu(cpu):
    """The prefix that runs a command on CPU `cpu` alone (none when None)."""
    return ["taskset", "-c", str(cpu)] if cpu is not None else []


def free_port():
    """A port that was free a moment ago (both agents need a fixed port in the config)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def load():
    """The 1-minute load average and core count, for the report."""
    one, five, _ = os.getloadavg()
    return "load %.2f (1 min) %.2f (5 min) on %d cores" % (one, five, os.cpu_count())


# ---------------------------------------------------------------- fake upstream

class FakeUpstream:
    def __init__(self, workdir, *flags):
        """flags: fake_upstream.py's, e.g. ("--tls", cert, key) for HTTPS."""
        script = os.path.join(HERE, "fake_upstream.py")
        log_path = os.path.join(workdir, "fake_upstream.log")
        self.proc = spawn([sys.executable, script, "--port", "0", *flags], log_path)
        scheme = "https" if "--tls" in flags else "http"
        self.port = _wait_for_line(log_path, "listening on %s://127.0.0.1:" % scheme, self.proc)
        self.url = "%s://127.0.0.1:%d" % (scheme, self.port)

    def _call(self, method, path, body=None):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            conn.request(method, path, body=json.dumps(body) if body is not None else None)
            resp = conn.getresponse()
            return json.loads(resp.read())
        finally:
            conn.close()

    def stats(self):
        return self._call("GET", "/_fake/stats")

    def reset(self):
        return self._call("POST", "/_fake/reset", {})

    def configure(self, **settings):
        return self._call("POST", "/_fake/config", settings)


def _wait_for_line(log_path, marker, proc, timeout=10):
    """Waits for marker in a log file and returns the port number after it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with open(log_path, "r", errors="replace") as f:
            for line in f:
                if marker in line:
                    return int(line.split(marker, 1)[1].split()[0].strip("/"))
        if proc.poll() is not None:
            raise RuntimeError("%s exited early, see %s" % (proc.args[0], log_path))
        time.sleep(0.02)
    raise RuntimeError("no '%s' in %s after %ds" % (marker, log_path, timeout))


# ---------------------------------------------------------------- agents

def write_config(path, port, **extra):
    """The config both agents accept: compat keys only."""
    settings = {
        "http_port": port,
        "log_level": "INFO",
        "log_to_file": False,
        "ttl_seconds": 300,
        "cache_size": 1000,
        "validate_credentials": False,
        "region": "us-east-1",
    }
    settings.update(extra)
    with open(path, "w") as f:
        for key, value in settings.items():
            if isinstance(value, bool):
                value = "true" if value else "false"
            elif isinstance(value, str):
                value = '"%s"' % value
            f.write("%s = %s\n" % (key, value))


def agent_env(token, upstream_port, container_creds=False):
    """Environment for an agent: token, region, endpoint, credentials.

    container_creds: take credentials from the fake upstream's /creds endpoint
    (they expire) instead of static environment keys."""
    keep = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR")
    env = {k: v for k, v in os.environ.items() if k in keep}
    endpoint = "http://127.0.0.1:%d" % upstream_port
    env.update({
        "AWS_TOKEN": token,
        "AWS_REGION": "us-east-1",
        "AWS_ENDPOINT_URL_SECRETS_MANAGER": endpoint,
        "AWS_ENDPOINT_URL_STS": endpoint,
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_CONFIG_FILE": "/dev/null",
        "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
    })
    if container_creds:
        env["AWS_CONTAINER_CREDENTIALS_FULL_URI"] = endpoint + "/creds"
    else:
        env["AWS_ACCESS_KEY_ID"] = "AKIAFAKEBENCH0000000"
        env["AWS_SECRET_ACCESS_KEY"] = "fake-bench-secret-key"
    return env


def agent_command(binary, args_template, config_path):
    """'--config {config}' (AWS 2.x and ours) or 'sm start --config {config}' (3.x)."""
    return [binary] + [a.replace("{config}", config_path) for a in shlex.split(args_template)]


def start_agent(cmd, env, workdir, port, timeout=15):
    """Starts an agent and polls /ping in a tight loop.

    Returns (proc, perf_counter() just before exec, seconds to the first 200 on /ping)."""
    log_path = os.path.join(workdir, "agent-%d.log" % port)
    t0 = time.perf_counter()
    proc = spawn(cmd, log_path, env=env, cwd=workdir)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("agent exited with %s at start, see %s" % (proc.returncode, log_path))
        try:
            status, _ = get(port, "/ping", None, timeout=1)
            if status == 200:
                return proc, t0, time.perf_counter() - t0
        except (OSError, http.client.HTTPException):
            time.sleep(0.0005)  # not listening yet
    stop(proc)
    raise RuntimeError("agent did not answer /ping within %ds, see %s" % (timeout, log_path))


def secret_path(secret_id):
    return "/secretsmanager/get?secretId=" + secret_id


def get(port, path, token, timeout=10, conn=None):
    """One GET on a new connection (or on conn, kept open). Returns (status, body)."""
    own = conn is None
    if own:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path, headers={TOKEN_HEADER: token} if token else {})
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        if own:
            conn.close()


def run_sampling(cmd, timeout, every, sample, log_path):
    """Runs `cmd` (wrk) to its end while a thread calls `sample(seconds)` every
    `every` seconds, on a fixed schedule from the start; writes the command's
    output to `log_path` and returns the CompletedProcess."""
    stop = threading.Event()
    start = time.monotonic()

    def loop():
        next_at = start
        while not stop.is_set():
            sample(time.monotonic() - start)
            next_at += every
            stop.wait(max(0, next_at - time.monotonic()))

    sampler = threading.Thread(target=loop)
    sampler.start()
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    finally:
        stop.set()
        sampler.join()
    with open(log_path, "w") as f:
        f.write(out.stdout + out.stderr)
    return out


def _status(pid):
    """The numeric fields of /proc/PID/status ({} if the process is gone)."""
    fields = {}
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                name, _, value = line.partition(":")
                parts = value.split()
                if parts and parts[0].isdigit():
                    fields[name] = int(parts[0])
    except OSError:
        pass
    return fields


def proc_status(pid):
    """(VmRSS in KiB, thread count), or (None, None) if the process is gone."""
    fields = _status(pid)
    return fields.get("VmRSS"), fields.get("Threads")


def rss_anon(pid):
    """RssAnon in KiB: the private part of RSS (heap, stacks), without the
    binary's and libraries' code and data pages. None if the process is gone."""
    return _status(pid).get("RssAnon")


def percentile(sorted_values, p):
    if not sorted_values:
        return float("nan")
    k = min(len(sorted_values) - 1, max(0, int(round(p / 100 * len(sorted_values) + 0.5)) - 1))
    return sorted_values[k]


def need_wrk():
    if subprocess.run(["sh", "-c", "command -v wrk"], stdout=subprocess.DEVNULL).returncode != 0:
        sys.exit("wrk not found: install it with `apt-get install -y wrk` (Debian package)")
