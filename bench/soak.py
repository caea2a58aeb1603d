#!/usr/bin/env python3
"""Soak and fault run: wrk for several minutes while the fake upstream injects
faults; fails on any unexpected answer or on RSS / thread growth.

    SOAK_SECONDS=300 python3 bench/soak.py      # exit 0 = pass, 1 = fail

What happens:
 1. The fake upstream starts; the agent starts with ttl_seconds = 2 and takes its
    credentials from the fake container endpoint (AWS_CONTAINER_CREDENTIALS_FULL_URI),
    which hands out credentials that expire every 20 s.
 2. Warm-up without faults: the agent caches soak-000 .. soak-099.
 3. Faults on: Secrets Manager calls get 500s, 400 ThrottlingException, 2 s latency
    spikes and dropped connections, and secrets get new versions now and then; the
    credentials endpoint answers 500 at times.
    Every cached entry expires every 2 s, so refreshes (and their failures) never stop.
 4. wrk (2 threads, 32 keep-alive connections) asks only for those 100 cached
    secrets. With ignore_transient_errors on (the default) every answer must be
    200: any other status, any socket error or timeout is a failure.
 5. RSS and thread count are sampled every second. The run fails if the largest
    value of the last window exceeds the largest of the first window (after a
    short warm-up) by more than the slack: +20 % + 1 MiB RSS, +16 threads.
    Windows: 60 s each, or a third of the run when it is shorter than 3 minutes.
 6. At the end /ping and one secret must still answer 200, the agent must exit
    on SIGTERM, and its log must not mention a panic.

Settings (flag or environment variable):
  --bin      SOAK_BIN      agent binary (default target/release/secrets-manager-agent)
  --args     SOAK_ARGS     its arguments (default "--config {config}")
  --seconds  SOAK_SECONDS  length of the faulty wrk run (default 300)
  --keep                   keep the logs directory even when the run passes
"""

import argparse
import os
import re
import secrets
import shutil
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

SECRETS = 100
CREDS_TTL_S = 20
FAULTS = {
    "error_rate": 0.10,      # 500 InternalServiceError
    "throttle_rate": 0.05,   # 400 ThrottlingException
    "spike_rate": 0.02,      # answer after spike_seconds
    "spike_seconds": 2.0,
    "drop_rate": 0.02,       # connection closed, no answer
    "rotate_rate": 0.05,     # new version: the agent must GetSecretValue again
    "creds_error_rate": 0.2,  # credentials endpoint answers 500
}
# Our agent's knobs (another agent ignores them): a 2 s spike becomes a timeout
# after 1.5 s, so timeouts are exercised as well as slow answers.
AGENT_KNOBS = {"SMA_UPSTREAM_TIMEOUT_MS": "1500"}
RSS_SLACK_PCT = 20
RSS_SLACK_KIB = 1024
THREAD_SLACK = 16


def main():
    opts = parse_args()
    common.need_wrk()
    binary = os.path.abspath(opts.bin)
    if not os.access(binary, os.X_OK):
        sys.exit("not an executable: %s (make build)" % binary)
    workdir = tempfile.mkdtemp(prefix="sma-soak-")
    passed = False
    try:
        passed = soak(binary, opts, workdir)
    finally:
        if passed and not opts.keep:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            print("logs kept in %s" % workdir)
    sys.exit(0 if passed else 1)


def parse_args():
    env = os.environ.get
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bin", default=env("SOAK_BIN", os.path.join(common.REPO, "target/release/secrets-manager-agent")))
    p.add_argument("--args", default=env("SOAK_ARGS", "--config {config}"))
    p.add_argument("--seconds", type=int, default=int(env("SOAK_SECONDS", "300")))
    p.add_argument("--keep", action="store_true")
    return p.parse_args()


def soak(binary, opts, workdir):
    print("==> soak %ds against %s (%s)" % (opts.seconds, binary, common.load()), flush=True)
    upstream = common.FakeUpstream(workdir, "--creds-ttl", str(CREDS_TTL_S))
    token = secrets.token_hex(32)
    port = common.free_port()
    config = os.path.join(workdir, "agent.toml")
    common.write_config(config, port, ttl_seconds=2, ignore_transient_errors=True, max_conn=800)
    env = common.agent_env(token, upstream.port, container_creds=True)
    env.update(AGENT_KNOBS)
    proc, _, _ = common.start_agent(common.agent_command(binary, opts.args, config), env, workdir, port)
    failures = []
    try:
        # Warm-up, no faults: every secret the workload asks for is cached.
        for i in range(SECRETS):
            status, body = common.get(port, common.secret_path("soak-%03d" % i), token)
            if status != 200:
                raise RuntimeError("warm-up: soak-%03d answered %d %r" % (i, status, body[:200]))
        print("    warm-up done: %d secrets cached; faults on: %s" % (SECRETS, FAULTS), flush=True)
        upstream.reset()
        upstream.configure(**FAULTS)

        samples = []  # (seconds since faults on, rss KiB, threads)
        wrk_out = run_wrk_sampling(proc.pid, port, token, opts.seconds, samples, workdir)
        upstream.configure(error_rate=0, throttle_rate=0, spike_rate=0, drop_rate=0, creds_error_rate=0,
                           rotate_rate=0)

        failures += check_statuses(wrk_out)
        failures += check_growth(samples, opts.seconds)
        failures += check_still_serving(proc, port, token)
        stats = upstream.stats()
    finally:
        code = common.stop(proc, timeout=10)
    if code not in (0, -15, 143):
        failures.append("agent exit code %s after SIGTERM" % code)
    log = open(os.path.join(workdir, "agent-%d.log" % port), errors="replace").read()
    if re.search(r"panick", log):
        failures.append("the agent log mentions a panic")

    print_summary(wrk_out, samples, stats, log, failures)
    return not failures


def run_wrk_sampling(pid, port, token, seconds, samples, workdir):
    url = "http://127.0.0.1:%d/" % port
    cmd = ["wrk", "-t2", "-c32", "-d%ds" % seconds, "--timeout", "30s",
           "-s", os.path.join(common.HERE, "soak.lua"),
           "-H", "%s: %s" % (common.TOKEN_HEADER, token), url, "--", str(SECRETS)]
    csv = open(os.path.join(workdir, "samples.csv"), "w")
    csv.write("seconds,rss_kib,threads\n")

    def sample(t):
        rss, threads = common.proc_status(pid)
        if rss is not None:
            samples.append((t, rss, threads))
            csv.write("%.1f,%d,%d\n" % (t, rss, threads))
            csv.flush()

    try:
        out = common.run_sampling(cmd, seconds + 120, 1, sample, os.path.join(workdir, "wrk.txt"))
    finally:
        csv.close()
    if out.returncode != 0 or "SOAK " not in out.stdout:
        raise RuntimeError("wrk failed:\n" + out.stdout + out.stderr)
    return out.stdout


def parse_wrk(out):
    statuses = {}
    m = re.search(r"^SOAK_STATUS(.*)$", out, re.M)
    for kv in m.group(1).split():
        code, count = kv.split("=")
        statuses[int(code)] = int(count)
    m = re.search(r"^SOAK (.*)$", out, re.M)
    summary = {k: int(v) for k, v in (kv.split("=") for kv in m.group(1).split())}
    return statuses, summary


def check_statuses(out):
    statuses, s = parse_wrk(out)
    failures = []
    unexpected = {code: n for code, n in statuses.items() if code != 200}
    if unexpected:
        failures.append("unexpected statuses: %s" % unexpected)
    errors = {k: s[k] for k in ("connect_errors", "read_errors", "write_errors", "timeouts") if s[k]}
    if errors:
        failures.append("socket errors: %s" % errors)
    if statuses.get(200, 0) == 0:
        failures.append("no request succeeded")
    return failures


def windows(duration):
    """(first window, last window) as (from, to) seconds after faults went on."""
    warm = min(10.0, duration / 10)
    width = min(60.0, (duration - warm) / 3)
    return (warm, warm + width), (duration - width, duration)


def check_growth(samples, duration):
    (a0, a1), (b0, b1) = windows(duration)
    first = [s for s in samples if a0 <= s[0] <= a1]
    last = [s for s in samples if b0 <= s[0] <= b1 + 1]
    if not first or not last:
        return ["too few RSS samples (%d)" % len(samples)]
    failures = []
    rss_first, rss_last = max(s[1] for s in first), max(s[1] for s in last)
    limit = rss_first * (1 + RSS_SLACK_PCT / 100) + RSS_SLACK_KIB
    if rss_last > limit:
        failures.append("RSS grew: max %d KiB in the first window, %d KiB in the last (limit %d)"
                        % (rss_first, rss_last, limit))
    thr_first, thr_last = max(s[2] for s in first), max(s[2] for s in last)
    if thr_last > thr_first + THREAD_SLACK:
        failures.append("threads grew: max %d in the first window, %d in the last (limit %d)"
                        % (thr_first, thr_last, thr_first + THREAD_SLACK))
    return failures


def check_still_serving(proc, port, token):
    if proc.poll() is not None:
        return ["the agent died (exit code %s)" % proc.returncode]
    failures = []
    for path, what in (("/ping", "/ping"), (common.secret_path("soak-000"), "soak-000")):
        try:
            status, _ = common.get(port, path, token if what != "/ping" else None, timeout=30)
        except OSError as e:
            status = repr(e)
        if status != 200:
            failures.append("after the run %s answered %s" % (what, status))
    return failures


def print_summary(out, samples, stats, log, failures):
    statuses, s = parse_wrk(out)
    secs = s["duration_us"] / 1e6
    (a0, a1), (b0, b1) = windows(secs)
    first = [x for x in samples if a0 <= x[0] <= a1] or samples
    last = [x for x in samples if b0 <= x[0] <= b1 + 1] or samples
    ops, injected, keys = stats["ops"], stats["injected"], stats["keys"]
    warnings = len(re.findall(r"\bWARN", log))
    print()
    print("soak summary (%s)" % common.load())
    print("  requests        %d in %.0f s (%.0f/s); statuses %s" % (s["requests"], secs, s["requests"] / secs, statuses))
    print("  latency         p50 %.2f ms, p99 %.2f ms, max %.0f ms" % (s["p50_us"] / 1e3, s["p99_us"] / 1e3, s["max_us"] / 1e3))
    print("  socket errors   connect %d, read %d, write %d, timeouts %d"
          % (s["connect_errors"], s["read_errors"], s["write_errors"], s["timeouts"]))
    print("  upstream calls  %s" % ops)
    print("  faults injected %s" % injected)
    print("  credentials     %d issued (expire every %d s); signed with: %s"
          % (stats["credentials_issued"], CREDS_TTL_S, keys))
    if not samples:
        print("  no RSS samples: the agent was gone")
        samples = first = last = [(0, 0, 0)]
    print("  RSS KiB         first window (%.0f-%.0f s) max %d, last window (%.0f-%.0f s) max %d, overall %d-%d"
          % (a0, a1, max(x[1] for x in first), b0, b1, max(x[1] for x in last),
             min(x[1] for x in samples), max(x[1] for x in samples)))
    print("  threads         first window max %d, last window max %d, overall %d-%d"
          % (max(x[2] for x in first), max(x[2] for x in last),
             min(x[2] for x in samples), max(x[2] for x in samples)))
    print("  agent log       %d WARN lines" % warnings)
    if failures:
        print("SOAK FAIL")
        for f in failures:
            print("  - " + f)
    else:
        print("SOAK PASS")


if __name__ == "__main__":
    main()
