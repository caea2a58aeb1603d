#!/usr/bin/env python3
"""Benchmark the agent against a fast fake Secrets Manager and print a table.

    python3 bench/bench.py                      # target/release/secrets-manager-agent
    BENCH_OTHER=/path/to/aws_secretsmanager_agent python3 bench/bench.py

With BENCH_OTHER (or --other) the same workload runs against that binary, with
the same config file, environment and token, and the table gets a column for it
and the ratio it/ours; BENCH_OTHER2 adds a second one (`make bench-compare`: AWS's
agent 2.1.0 and its 3.x successor in one run). Everything runs on 127.0.0.1; all processes
started here are stopped on exit. Needs wrk (`apt-get install -y wrk`).

Settings (flag or environment variable):
  --bin           BENCH_BIN            our binary (default target/release/secrets-manager-agent)
  --args          BENCH_ARGS           its arguments (default "--config {config}")
  --other         BENCH_OTHER          the other agent's binary (optional)
  --other-args    BENCH_OTHER_ARGS     its arguments (default "--config {config}";
                                       "sm start --config {config}" for aws_workload_credentials_provider)
  --other-name    BENCH_OTHER_NAME     its column's name (default "other")
  --other2, --other2-args, --other2-name  (BENCH_OTHER2, BENCH_OTHER2_ARGS, BENCH_OTHER2_NAME)
                                       a second agent to compare, the same way
  --seconds       BENCH_SECONDS        length of one wrk run (default 5)
  --rounds        BENCH_ROUNDS         wrk runs per agent, taken in turns (default 5)
  --starts        BENCH_STARTS         start-ups to take the median of (default 5)
  --conn-requests BENCH_CONN_REQUESTS  requests for the new-connection latency (default 2000)
  --fleet-ttl     BENCH_FLEET_TTL      ttl_seconds of the fleet run, scaled to 300 (default 4)
  --fleet-periods BENCH_FLEET_PERIODS  TTLs the fleet run counts calls for (default 6)
  --floor         BENCH_FLOOR          the floor server (bench/floor.rs, built by `make bench`);
                                       runs in the keep-alive and one-CPU rounds, lines under the table
  --sdk-calls     BENCH_SDK_CALLS      sequential boto3 calls for the SDK latency lines (default 200)

The keep-alive rows are medians over the rounds. All agents are started and
filled first, then wrk runs against each in turn, round after round (one round:
ours, then each other agent; the next round in reverse order), so that a machine
whose speed drifts (a shared VM, a busy neighbour) slows every agent alike. The
ratio row under requests/s pairs the runs of one round: the median of each
round's other/ours, which a drift between rounds does not move.

The floor (with BENCH_FLOOR) runs in the same rounds, right after ours: a
server that answers every request with the bytes ours answered and does
nothing else (bench/floor.rs). What it spends is what loopback TCP and the
client cost on that machine; the lines under the table put each agent's
requests/s against it, round by round.

Then each agent runs once more, started on one CPU (taskset), while wrk runs
with one thread on another: the figure of an agent that has a CPU of its own,
which the client does not share. On a machine with fewer than two CPUs these
rows stay empty.

The SDK protocol (with boto3 importable): ours answering the AWS SDK's
GetSecretValue (POST /, X-Amz-Target, JSON 1.1, SigV4) in the same keep-alive
rounds, right after the floor: a request boto3 signed just before each wrk run,
replayed by wrk with the same settings, against two more of ours started and
filled like the first, one with caller_auth = "credentials" (the signature
checked) and one with "none" (not checked). Lines under the table: requests/s,
latency and CPU a request of both against the GET route's, and the ratio of CPU
a request signed SDK / GET. Then the latency of sequential boto3 calls through
the signed agent (a cache hit) and straight to a fake upstream that answers
after 20 ms.

The fleet row: upstream calls an hour that keep 100 hot secrets fresh with
ttl_seconds = 300 (unchanged secrets, each read every TTL/20). Nobody waits an
hour: the agent runs with a TTL of a few seconds and the count is scaled by
300 / TTL, which holds because every refresh schedule is a fraction of the TTL.
"""

import argparse
import http.client
import os
import re
import secrets
import shutil
import socket
import statistics
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402
import sdk  # noqa: E402

WRK_THREADS = 2
WRK_CONNECTIONS = 32
SECRETS_TO_CACHE = 1000
COLD_MISS_CLIENTS = 100
COLD_MISS_UPSTREAM_DELAY_MS = 200  # long enough for all 100 requests to arrive first
FLEET_SECRETS = 100
FLEET_TTL_SCALED = 300  # the fleet figure is for this TTL
SM_OPERATIONS = ("GetSecretValue", "DescribeSecret", "BatchGetSecretValue")
# The secret of the throughput runs: one of the last cached.
HOT_SECRET = "bench-%04d" % (SECRETS_TO_CACHE - 1)
FLOOR = "floor"
# Ours in the SDK's protocol: (name, caller_auth), measured in the keep-alive rounds.
SDK_AGENTS = (("sdk", "credentials"), ("sdk-none", "none"))
SDK_SLOW_UPSTREAM_MS = 20  # the fake upstream of the boto3 latency lines
SDK_CPU_GOAL = 1.20  # CPU a request, signed SDK over GET: at most this
STATIC_BIN = os.path.join(common.REPO, "target/x86_64-unknown-linux-musl/release/secrets-manager-agent")


def main():
    opts = parse_args()
    common.need_wrk()
    binaries = [("ours", os.path.abspath(opts.bin), opts.args)]
    for other, args, name in ((opts.other, opts.other_args, opts.other_name),
                              (opts.other2, opts.other2_args, opts.other2_name)):
        if other:
            binaries.append((name, os.path.abspath(other), args))
    if len({name for name, _, _ in binaries}) < len(binaries):
        sys.exit("two agents have the same column name: set BENCH_OTHER_NAME / BENCH_OTHER2_NAME")
    for _, path, _ in binaries:
        if not os.access(path, os.X_OK):
            sys.exit("not an executable: %s (for ours: make build)" % path)
    if opts.floor and not os.access(opts.floor, os.X_OK):
        sys.exit("not an executable: %s (make bench builds it)" % opts.floor)

    workdir = tempfile.mkdtemp(prefix="sma-bench-")
    ok = False
    try:
        upstream = common.FakeUpstream(workdir)
        token = secrets.token_hex(32)
        results, running = {}, {}
        try:
            for name, path, args in binaries:
                print("==> %s: %s (%s)" % (name, path, common.load()), flush=True)
                results[name], running[name] = start_and_fill(name, path, args, upstream, token, workdir, opts)
            measured = [name for name, _, _ in binaries]
            if opts.floor:
                answer = os.path.join(workdir, "floor-answer.http")
                with open(answer, "wb") as f:
                    f.write(raw_answer(running["ours"][1], common.secret_path(HOT_SECRET), token))
                floor = start_floor(opts.floor, answer, token, workdir)
                running[FLOOR] = floor()
                results[FLOOR] = {}
                # Next to ours in every round, so that drift within a round
                # moves their ratio least.
                measured.insert(1, FLOOR)
            clients = {}
            why = sdk.available()
            if why:
                print("==> the SDK protocol: skipped, no boto3 (%s): pip install boto3" % why, flush=True)
            else:
                clients, env = start_sdk_agents(binaries[0], upstream, token, workdir, running, results)
                # After the floor: next to ours, whose GET route they are held against.
                at = 2 if opts.floor else 1
                measured[at:at] = [name for name, _ in SDK_AGENTS]
            keep_alive_rounds(measured, running, results, token, workdir, opts, clients)
            if clients:
                results["sdk"].update(sdk_latency(clients["sdk"], env, workdir, opts))
                for name, _ in SDK_AGENTS:
                    common.stop(running.pop(name)[0])
            one_cpu_rounds(binaries, floor if opts.floor else None, upstream, results, token, workdir, opts)
            if opts.floor:
                common.stop(running.pop(FLOOR)[0])
            for name, path, args in binaries:
                print("==> %s: the rest (%s)" % (name, common.load()), flush=True)
                results[name].update(the_rest(name, path, args, running.pop(name), upstream, token, workdir, opts))
        finally:
            for proc, _ in running.values():
                common.stop(proc)
        print()
        print_table(results, binaries)
        if opts.floor:
            print_floor(results, binaries, opts.floor)
        if "sdk" in results:
            print_sdk(results)
        ok = True
    finally:
        if ok and not opts.keep:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            print("logs kept in %s" % workdir)


def parse_args():
    env = os.environ.get
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bin", default=env("BENCH_BIN", os.path.join(common.REPO, "target/release/secrets-manager-agent")))
    p.add_argument("--args", default=env("BENCH_ARGS", "--config {config}"))
    p.add_argument("--other", default=env("BENCH_OTHER") or None)
    p.add_argument("--other-args", default=env("BENCH_OTHER_ARGS", "--config {config}"))
    p.add_argument("--other-name", default=env("BENCH_OTHER_NAME", "other"))
    p.add_argument("--other2", default=env("BENCH_OTHER2") or None)
    p.add_argument("--other2-args", default=env("BENCH_OTHER2_ARGS", "--config {config}"))
    p.add_argument("--other2-name", default=env("BENCH_OTHER2_NAME", "other2"))
    p.add_argument("--seconds", type=int, default=int(env("BENCH_SECONDS", "5")))
    p.add_argument("--rounds", type=int, default=int(env("BENCH_ROUNDS", "5")))
    p.add_argument("--starts", type=int, default=int(env("BENCH_STARTS", "5")))
    p.add_argument("--conn-requests", type=int, default=int(env("BENCH_CONN_REQUESTS", "2000")))
    p.add_argument("--fleet-ttl", type=int, default=int(env("BENCH_FLEET_TTL", "4")))
    p.add_argument("--fleet-periods", type=int, default=int(env("BENCH_FLEET_PERIODS", "6")))
    p.add_argument("--floor", default=env("BENCH_FLOOR") or None)
    p.add_argument("--sdk-calls", type=int, default=int(env("BENCH_SDK_CALLS", "200")))
    p.add_argument("--keep", action="store_true", help="keep the logs directory")
    return p.parse_args()


def launcher(name, binary, args, upstream, token, workdir, cpu=None, **settings):
    """Starts the agent, on CPU `cpu` alone if given; `settings` are added to its config."""
    env = common.agent_env(token, upstream.port)
    pin = common.on_cpu(cpu)

    def launch():
        port = common.free_port()
        config = os.path.join(workdir, "%s-%d.toml" % (name, port))
        common.write_config(config, port, **settings)
        proc, t0, ping_s = common.start_agent(pin + common.agent_command(binary, args, config), env, workdir, port)
        return proc, port, t0, ping_s
    return launch, env


def start_and_fill(name, binary, args, upstream, token, workdir, opts):
    """Start-up figures, then one agent left running with 1000 secrets cached:
    returns its figures so far and (process, port)."""
    r = {"size": os.stat(binary).st_size}
    launch, _ = launcher(name, binary, args, upstream, token, workdir)

    # Start-up: exec -> first 200 on /ping, and -> first (uncached) secret served.
    pings, firsts = [], []
    for i in range(opts.starts):
        proc, port, t0, ping_s = launch()
        status, _ = common.get(port, common.secret_path("startup-%s-%d" % (name, i)), token)
        firsts.append(time.perf_counter() - t0)
        pings.append(ping_s)
        common.stop(proc)
        if status != 200:
            raise RuntimeError("first secret answered %d" % status)
    r["start_ping_ms"] = statistics.median(pings) * 1000
    r["start_secret_ms"] = statistics.median(firsts) * 1000

    proc, port, _, _ = launch()
    try:
        time.sleep(1)
        r["rss_idle"], r["threads_idle"] = common.proc_status(proc.pid)

        print("    caching %d secrets" % SECRETS_TO_CACHE, flush=True)
        fill_cache(port, token)
        time.sleep(1)
        r["rss_cached"], r["threads_cached"] = common.proc_status(proc.pid)
        r["anon_cached"] = common.rss_anon(proc.pid)
    except BaseException:
        common.stop(proc)
        raise
    return r, (proc, port)


def keep_alive_rounds(names, running, results, token, workdir, opts, clients):
    """wrk against each running server in turn, `opts.rounds` times; medians,
    and each other one's requests/s over ours within a round, the median.
    Those in `clients` (sdk.Sdk) get an SDK request signed just before their run."""
    runs = {name: [] for name in names}
    for n in range(opts.rounds):
        order = names if n % 2 == 0 else names[::-1]
        print("    keep-alive round %d/%d: wrk %ds, %d threads, %d connections (%s)"
              % (n + 1, opts.rounds, opts.seconds, WRK_THREADS, WRK_CONNECTIONS, common.load()), flush=True)
        for name in order:
            proc, port = running[name]
            script = None
            if name in clients:
                script = clients[name].wrk_script(HOT_SECRET, os.path.join(workdir, "wrk-%s-%d.lua" % (name, n)))
            runs[name].append(throughput(proc.pid, port, token, opts.seconds, workdir, "%s-%d" % (name, n),
                                         script=script))
    for name in names:
        got = runs[name]
        median = {k: statistics.median(run[k] for run in got) for k in ("rps", "ka_p50_ms", "ka_p99_ms", "cpu_us")}
        results[name].update(median)
        results[name]["rps_range"] = "%s-%s" % ("{:,.0f}".format(min(r["rps"] for r in got)),
                                                "{:,.0f}".format(max(r["rps"] for r in got)))
        results[name]["p99_range"] = "%.3f-%.3f" % (min(r["ka_p99_ms"] for r in got),
                                                    max(r["ka_p99_ms"] for r in got))
        results[name]["ka_errors"] = sum(r["ka_errors"] for r in got)
        results[name]["rss_peak"] = max((r["rss_peak"] for r in got if r["rss_peak"]), default=None)
        results[name]["threads_peak"] = max((r["threads_peak"] for r in got if r["threads_peak"]), default=None)
        results[name]["rss_end"], results[name]["anon_end"] = got[-1]["rss_end"], got[-1]["anon_end"]
        results[name]["rps_rounds"] = [r["rps"] for r in got]
        results[name]["cpu_rounds"] = [r["cpu_us"] for r in got]
    for name in names:
        results[name]["rps_paired"] = paired(results, name, "ours")


def one_cpu_rounds(binaries, floor, upstream, results, token, workdir, opts):
    """Each agent (and the floor, if given) started on one CPU, wrk -t1 on
    another, in turns; medians."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        print("    one CPU each: skipped, fewer than two CPUs", flush=True)
        return
    running = {}
    try:
        for name, path, args in binaries:
            launch, _ = launcher(name, path, args, upstream, token, workdir, cpu=cpus[0])
            proc, port, _, _ = launch()
            running[name] = (proc, port)
            status, _ = common.get(port, common.secret_path(HOT_SECRET), token)
            if status != 200:
                raise RuntimeError("%s answered %d" % (name, status))
        names = [name for name, _, _ in binaries]
        if floor:
            running[FLOOR] = floor(cpu=cpus[0])
            names.append(FLOOR)
        runs = {name: [] for name in names}
        for n in range(opts.rounds):
            order = names if n % 2 == 0 else names[::-1]
            print("    one CPU each, round %d/%d: agent on CPU %d, wrk -t1 on CPU %d (%s)"
                  % (n + 1, opts.rounds, cpus[0], cpus[1], common.load()), flush=True)
            for name in order:
                proc, port = running[name]
                runs[name].append(throughput(proc.pid, port, token, opts.seconds, workdir,
                                             "%s-cpu-%d" % (name, n), threads=1, cpu=cpus[1]))
        for name in names:
            for key in ("rps", "ka_p99_ms", "cpu_us"):
                results[name]["one_cpu_" + key] = statistics.median(run[key] for run in runs[name])
    finally:
        for proc, _ in running.values():
            common.stop(proc)


def raw_answer(port, path, token):
    """The bytes of one keep-alive answer to GET `path`, head and body, as
    the agent wrote them."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(("GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\n%s: %s\r\n\r\n"
                      % (path, common.TOKEN_HEADER, token)).encode())
        got = b""
        while b"\r\n\r\n" not in got:
            chunk = sock.recv(65536)
            if not chunk:
                raise RuntimeError("the agent closed before its answer's head ended")
            got += chunk
        head = got.split(b"\r\n\r\n", 1)[0]
        m = re.search(rb"^content-length:\s*(\d+)\s*$", head, re.I | re.M)
        if not head.startswith(b"HTTP/1.1 200 ") or not m:
            raise RuntimeError("not a 200 with a Content-Length: %r" % head)
        # Replayed, it would keep the connection while telling wrk to close it.
        if re.search(rb"^connection:\s*close\s*$", head, re.I | re.M):
            raise RuntimeError("a keep-alive request was answered with Connection: close: %r" % head)
        whole = len(head) + 4 + int(m.group(1))
        while len(got) < whole:
            chunk = sock.recv(65536)
            if not chunk:
                raise RuntimeError("the agent closed before its answer's body ended")
            got += chunk
        return got[:whole]


def start_floor(binary, answer, token, workdir):
    """A function that starts the floor server (on CPU `cpu` alone if given)
    and returns (process, port) once it answers the benchmark's request with
    the bytes in `answer`."""
    with open(answer, "rb") as f:
        body = f.read().split(b"\r\n\r\n", 1)[1]

    def launch(cpu=None):
        port = common.free_port()
        pin = common.on_cpu(cpu)
        proc = common.spawn(pin + [binary, str(port), answer], os.path.join(workdir, "floor-%d.log" % port))
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError("the floor exited with %s, see %s/floor-%d.log" % (proc.returncode, workdir, port))
            try:
                status, got = common.get(port, common.secret_path(HOT_SECRET), token)
            except ConnectionRefusedError:
                time.sleep(0.01)  # not listening yet
                continue
            except (OSError, http.client.HTTPException) as e:
                status, got = str(e), b""
            if status != 200 or got != body:
                common.stop(proc)
                raise RuntimeError("the floor on port %d did not answer like ours (%s); another process there?"
                                   % (port, status))
            return proc, port
        common.stop(proc)
        raise RuntimeError("the floor did not listen within 10 s, see %s/floor-%d.log" % (workdir, port))
    return launch


def start_sdk_agents(ours, upstream, token, workdir, running, results):
    """Ours twice more for the SDK rows, as SDK_AGENTS says, each with the same
    secrets cached as the first; returns ({name: sdk.Sdk on it}, the agents' environment)."""
    _, binary, args = ours
    clients = {}
    for name, auth in SDK_AGENTS:
        print('==> ours in the SDK\'s protocol, caller_auth = "%s" (%s)' % (auth, common.load()), flush=True)
        launch, env = launcher(name, binary, args, upstream, token, workdir, caller_auth=auth)
        proc, port, _, _ = launch()
        running[name] = (proc, port)
        results[name] = {"caller_auth": auth}
        print("    caching %d secrets" % SECRETS_TO_CACHE, flush=True)
        fill_cache(port, token)
        clients[name] = sdk.Sdk("http://127.0.0.1:%d" % port, env)
        clients[name].get(HOT_SECRET)
    return clients, env


def sdk_latency(client, env, workdir, opts):
    """p50 and p99 of sequential boto3 calls through the agent (a cache hit),
    then straight to a fake upstream that answers after SDK_SLOW_UPSTREAM_MS."""
    print("    boto3: %d calls through the agent, then %d to a fake upstream answering after %d ms (%s)"
          % (opts.sdk_calls, opts.sdk_calls, SDK_SLOW_UPSTREAM_MS, common.load()), flush=True)
    r = {"boto3_calls": opts.sdk_calls}
    r["boto3_agent_p50_ms"], r["boto3_agent_p99_ms"] = sdk.latency(client, HOT_SECRET, opts.sdk_calls)
    slow_dir = os.path.join(workdir, "slow-upstream")
    os.makedirs(slow_dir, exist_ok=True)
    slow = common.FakeUpstream(slow_dir, "--delay-ms", str(SDK_SLOW_UPSTREAM_MS))
    try:
        direct = sdk.Sdk(slow.url, env)
        r["boto3_direct_p50_ms"], r["boto3_direct_p99_ms"] = sdk.latency(direct, HOT_SECRET, opts.sdk_calls)
    finally:
        common.stop(slow.proc)
    return r


def print_sdk(results):
    get, signed, unsigned = results["ours"], results["sdk"], results["sdk-none"]
    print()
    print("the SDK protocol: ours answering GetSecretValue (POST /, X-Amz-Target, JSON 1.1) for the same cached")
    print("secret, a request boto3 signed just before each run replayed by wrk -t2 -c32, in the same rounds;")
    print("each its own agent with %d secrets cached:" % SECRETS_TO_CACHE)
    rows = [["", "requests/s", "p50 ms", "p99 ms", "CPU us a request", "requests/s over GET's"],
            ["GET route hit (ours above)", "{:,.0f}".format(get["rps"]), "%.3f" % get["ka_p50_ms"],
             "%.3f" % get["ka_p99_ms"], "%.2f" % get["cpu_us"], ""]]
    for name, auth in SDK_AGENTS:
        r = results[name]
        if r["ka_errors"]:
            raise RuntimeError('the SDK runs with caller_auth = "%s" had %d errors or non-2xx answers; see the wrk '
                               "and agent logs" % (auth, r["ka_errors"]))
        rows.append(['SDK GetSecretValue, caller_auth = "%s"' % auth, "{:,.0f}".format(r["rps"]),
                     "%.3f" % r["ka_p50_ms"], "%.3f" % r["ka_p99_ms"], "%.2f" % r["cpu_us"],
                     "%.2f" % r["rps_paired"]])
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  " + "  ".join([row[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(row[1:], widths[1:])]).rstrip())
    ratio = signed["cpu_us"] / get["cpu_us"]
    within = statistics.median(s / g for s, g in zip(signed["cpu_rounds"], get["cpu_rounds"]))
    print('CPU a request, SDK (caller_auth = "credentials") over GET: %.2f (medians; within each round, median %.2f);'
          % (ratio, within))
    print("  goal at most %.2f: %s" % (SDK_CPU_GOAL, "holds" if ratio <= SDK_CPU_GOAL
                                           else "NOT MET, %.0f %% over GET's CPU" % ((ratio - 1) * 100)))
    print("  of the %.2f us a request more than GET: the signature's check %.2f us (credentials - none), the rest"
          % (signed["cpu_us"] - get["cpu_us"], signed["cpu_us"] - unsigned["cpu_us"]))
    print("  of the SDK route %.2f us (none - GET)" % (unsigned["cpu_us"] - get["cpu_us"]))
    print("boto3 get_secret_value, %d sequential calls on one client: through the agent (a cache hit) p50 %.3f ms,"
          % (signed["boto3_calls"], signed["boto3_agent_p50_ms"]))
    print("p99 %.3f ms; straight to a fake upstream answering after %d ms, p50 %.3f ms, p99 %.3f ms"
          % (signed["boto3_agent_p99_ms"], SDK_SLOW_UPSTREAM_MS, signed["boto3_direct_p50_ms"],
             signed["boto3_direct_p99_ms"]))


def paired(results, a, b):
    """The median over the rounds of a's requests/s over b's in the same round."""
    pairs = list(zip(results[a]["rps_rounds"], results[b]["rps_rounds"]))
    if any(y == 0 for _, y in pairs):
        raise RuntimeError("%s served no request in a round; see the wrk logs" % b)
    return statistics.median(x / y for x, y in pairs)


def print_floor(results, binaries, path):
    floor = results[FLOOR]
    one_cpu = "{:,.0f}".format(floor["one_cpu_rps"]) if "one_cpu_rps" in floor else "n/a"
    print()
    print("floor: %s, a server that answers with ours' bytes and does nothing else," % path)
    print("in the same rounds: %s requests/s (wrk -t2 -c32, median) at %.2f us of CPU a request; %s with one"
          % ("{:,.0f}".format(floor["rps"]), floor["cpu_us"], one_cpu))
    print("CPU each.")
    if floor["ka_errors"]:
        raise RuntimeError("the floor's wrk runs had %d errors or non-2xx answers: its figures mean nothing"
                           % floor["ka_errors"])
    best = max(x / y for x, y in zip(results["ours"]["rps_rounds"], floor["rps_rounds"]))
    print("requests/s as a share of the floor's within each round, median: "
          + ", ".join("%s %.2f" % (name, paired(results, name, FLOOR)) for name, _, _ in binaries)
          + "; ours at best %.2f" % best)
    for name, _, _ in binaries[1:]:
        print("the floor served %.2fx %s's requests/s within each round (median); ours %.2fx"
              % (paired(results, FLOOR, name), name, paired(results, "ours", name)))


def the_rest(name, binary, args, running, upstream, token, workdir, opts):
    """New connections and the cold miss on the running agent, then the fleet runs."""
    proc, port = running
    r = {}
    try:
        print("    %d requests, one connection each" % opts.conn_requests, flush=True)
        r.update(new_connection_latency(port, token, opts.conn_requests))

        # Last: 100 requests waiting at once may leave extra worker threads behind.
        print("    cold-miss coalescing", flush=True)
        r["coalesce_calls"], r["coalesce_bad"] = cold_miss(port, token, upstream, "coalesce-" + name)
        r["threads_coalesce"] = common.proc_status(proc.pid)[1]
    finally:
        common.stop(proc)

    _, env = launcher(name, binary, args, upstream, token, workdir)
    print("    fleet: %d hot secrets, ttl_seconds = %d for %d TTLs" % (FLEET_SECRETS, opts.fleet_ttl, opts.fleet_periods),
          flush=True)
    r["fleet_calls"], r["fleet_ops"] = fleet(binary, args, env, upstream, token, workdir, name, opts)
    if name == "ours":
        one_by_one = dict(env, SMA_REFRESH_BATCH="1")
        r["fleet_calls_single"], r["fleet_ops_single"] = fleet(binary, args, one_by_one, upstream, token, workdir,
                                                               name + "-single", opts)
    r["load"] = common.load()
    return r


def fleet(binary, args, env, upstream, token, workdir, name, opts):
    """Upstream calls an hour for FLEET_SECRETS hot secrets at FLEET_TTL_SCALED.

    Returns (calls an hour, "operation=calls ..." an hour)."""
    ttl, periods = opts.fleet_ttl, opts.fleet_periods
    port = common.free_port()
    config = os.path.join(workdir, "%s-fleet-%d.toml" % (name, port))
    common.write_config(config, port, ttl_seconds=ttl)
    proc, _, _ = common.start_agent(common.agent_command(binary, args, config), env, workdir, port)
    ids = ["fleet-%03d" % i for i in range(FLEET_SECRETS)]
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)

    def read_for(seconds):
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            started = time.monotonic()
            for secret_id in ids:
                status, _ = common.get(port, common.secret_path(secret_id), token, conn=conn)
                if status != 200:
                    raise RuntimeError("fleet read of %s answered %d" % (secret_id, status))
            time.sleep(max(0.0, started + ttl / 20 - time.monotonic()))

    try:
        read_for(2 * ttl)  # the first fetches, and the refresh schedule settling
        upstream.reset()
        read_for(periods * ttl)
        ops = upstream.stats()["ops"]
    finally:
        conn.close()
        common.stop(proc)
    per_hour = 3600 / FLEET_TTL_SCALED / periods
    calls = {op: ops.get(op, 0) * per_hour for op in SM_OPERATIONS}
    detail = " ".join("%s=%.0f" % (op.replace("SecretValue", "").replace("Secret", ""), n)
                      for op, n in calls.items() if n)
    return sum(calls.values()), detail or "none"


def cold_miss(port, token, upstream, secret_id):
    """100 clients, connected in advance, ask for one uncached secret at once.

    Returns (upstream GetSecretValue calls for it, answers other than 200)."""
    upstream.configure(delay_ms=COLD_MISS_UPSTREAM_DELAY_MS)
    barrier = threading.Barrier(COLD_MISS_CLIENTS, timeout=20)
    statuses = []
    request = ("GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\n%s: %s\r\nConnection: close\r\n\r\n"
               % (common.secret_path(secret_id), common.TOKEN_HEADER, token)).encode()

    def client():
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=20) as s:
                barrier.wait()
                s.sendall(request)
                statuses.append(read_status(s))
        except (OSError, threading.BrokenBarrierError) as e:
            statuses.append(repr(e))

    try:
        threads = [threading.Thread(target=client) for _ in range(COLD_MISS_CLIENTS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
    finally:
        upstream.configure(delay_ms=0)
    calls = upstream.stats()["by_secret"].get("GetSecretValue " + secret_id, 0)
    return calls, sum(1 for s in statuses if s != 200)


def read_status(sock):
    """Reads one response (Content-Length framed, or to EOF); returns its status."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise OSError("connection closed before the head: %r" % data[:80])
        data += chunk
    head, body = data.split(b"\r\n\r\n", 1)
    status = int(head.split(b" ", 2)[1])
    m = re.search(rb"(?im)^content-length:\s*(\d+)", head)
    if m:
        need = int(m.group(1))
        while len(body) < need:
            chunk = sock.recv(65536)
            if not chunk:
                break
            body += chunk
    else:
        while sock.recv(65536):
            pass
    return status


def fill_cache(port, token, clients=8):
    ids = ["bench-%04d" % i for i in range(SECRETS_TO_CACHE)]
    errors = []

    def client(part):
        conn = None
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            for secret_id in part:
                status, _ = common.get(port, common.secret_path(secret_id), token, conn=conn)
                if status != 200:
                    errors.append((secret_id, status))
        except OSError as e:
            errors.append(repr(e))
        finally:
            if conn:
                conn.close()

    threads = [threading.Thread(target=client, args=(ids[i::clients],)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    if errors:
        raise RuntimeError("filling the cache failed: %s" % errors[:5])


def throughput(pid, port, token, seconds, workdir, name, threads=WRK_THREADS, cpu=None, script=None):
    """wrk on one cached secret (its `threads` on CPU `cpu` alone if given);
    samples RSS and threads while it runs. The request is GET with the token,
    or the one `script` sets (sdk.Sdk.wrk_script's: POST / in the SDK's protocol)."""
    if script:
        url, request = "http://127.0.0.1:%d/" % port, ["-s", script]
    else:
        url = "http://127.0.0.1:%d%s" % (port, common.secret_path(HOT_SECRET))
        request = ["-s", os.path.join(common.HERE, "report.lua"), "-H", "%s: %s" % (common.TOKEN_HEADER, token)]
    pin = common.on_cpu(cpu)
    cmd = pin + ["wrk", "-t%d" % threads, "-c%d" % WRK_CONNECTIONS, "-d%ds" % seconds, "--latency",
                 "--timeout", "5s"] + request + [url]
    samples = []
    cpu_before = cpu_seconds(pid)
    out = common.run_sampling(cmd, seconds + 60, 0.25, lambda _: samples.append(common.proc_status(pid)),
                              os.path.join(workdir, "wrk-%s.txt" % name))
    cpu_used = cpu_seconds(pid) - cpu_before
    m = re.search(r"^BENCH (.*)$", out.stdout, re.M)
    if out.returncode != 0 or not m:
        raise RuntimeError("wrk failed:\n" + out.stdout + out.stderr)
    w = {k: int(v) for k, v in (kv.split("=") for kv in m.group(1).split())}
    rss_end, threads_end = common.proc_status(pid)
    anon_end = common.rss_anon(pid)
    return {
        "rps": w["requests"] / (w["duration_us"] / 1e6),
        # The agent's own CPU (user + kernel) per request: what it costs
        # whatever the client costs, so it compares agents on any CPU.
        "cpu_us": cpu_used / max(w["requests"], 1) * 1e6,
        "ka_p50_ms": w["p50_us"] / 1000,
        "ka_p99_ms": w["p99_us"] / 1000,
        "ka_errors": w["non2xx"] + w["connect_errors"] + w["read_errors"] + w["write_errors"] + w["timeouts"],
        "rss_end": rss_end,
        "anon_end": anon_end,
        "rss_peak": max((s[0] for s in samples if s[0]), default=None),
        "threads_peak": max((s[1] for s in samples if s[1]), default=None),
    }


def cpu_seconds(pid):
    """User + system CPU time of a process so far, in seconds."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def new_connection_latency(port, token, count, budget_s=60):
    """Sequential requests, each on a new TCP connection, timed from connect()
    to the last body byte, as curl does it. Includes the Python client's own cost."""
    request = ("GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\n%s: %s\r\nConnection: close\r\n\r\n"
               % (common.secret_path(HOT_SECRET), common.TOKEN_HEADER, token)).encode()
    times, bad = [], 0
    deadline = time.monotonic() + budget_s
    start = time.perf_counter()
    for _ in range(count):
        if time.monotonic() > deadline:
            break
        t0 = time.perf_counter()
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            s.sendall(request)
            status = read_status(s)
        times.append(time.perf_counter() - t0)
        bad += status != 200
    elapsed = time.perf_counter() - start
    times.sort()
    return {
        "nc_p50_ms": common.percentile(times, 50) * 1000,
        "nc_p99_ms": common.percentile(times, 99) * 1000,
        "nc_rps": len(times) / elapsed,
        "nc_errors": bad,
    }


# (label, key, format) — sizes and RSS are shown in MB (10^6 bytes) / MiB as noted.
ROWS = [
    ("binary size (bytes)", "size", "{:,.0f}"),
    ("start-up: exec -> /ping 200 (ms, median)", "start_ping_ms", "{:.1f}"),
    ("start-up: exec -> first secret 200 (ms, median)", "start_secret_ms", "{:.1f}"),
    ("RSS idle (MiB)", "rss_idle", "mib"),
    ("threads idle", "threads_idle", "{}"),
    ("RSS after caching 1000 secrets (MiB)", "rss_cached", "mib"),
    ("  of which private: RssAnon (MiB)", "anon_cached", "mib"),
    ("threads after caching 1000 secrets (8 clients)", "threads_cached", "{}"),
    ("keep-alive: requests/s (wrk -t2 -c32, median)", "rps", "{:,.0f}"),
    ("  lowest-highest of the rounds", "rps_range", "{}"),
    ("  other/ours within each round, median", "rps_paired", "paired"),
    ("keep-alive: p50 latency (ms, median)", "ka_p50_ms", "{:.3f}"),
    ("keep-alive: p99 latency (ms, median)", "ka_p99_ms", "{:.3f}"),
    ("  lowest-highest of the rounds", "p99_range", "{}"),
    ("keep-alive: agent CPU per request (us, median)", "cpu_us", "{:.2f}"),
    ("keep-alive: errors + non-2xx", "ka_errors", "{}"),
    ("one CPU each (agent; wrk -t1): requests/s, median", "one_cpu_rps", "{:,.0f}"),
    ("one CPU each: p99 latency (ms, median)", "one_cpu_ka_p99_ms", "{:.3f}"),
    ("one CPU each: agent CPU per request (us, median)", "one_cpu_cpu_us", "{:.2f}"),
    ("RSS peak during wrk run (MiB)", "rss_peak", "mib"),
    ("RSS at end of the last wrk run (MiB)", "rss_end", "mib"),
    ("  of which private: RssAnon (MiB)", "anon_end", "mib"),
    ("threads peak during wrk run", "threads_peak", "{}"),
    ("new connection each: p50 latency (ms)", "nc_p50_ms", "{:.3f}"),
    ("new connection each: p99 latency (ms)", "nc_p99_ms", "{:.3f}"),
    ("new connection each: requests/s (1 client)", "nc_rps", "{:,.0f}"),
    ("new connection each: non-200", "nc_errors", "{}"),
    ("cold miss, 100 concurrent: upstream calls", "coalesce_calls", "{}"),
    ("cold miss, 100 concurrent: non-200", "coalesce_bad", "{}"),
    ("threads right after the cold miss", "threads_coalesce", "{}"),
    ("fleet: upstream calls/hour, 100 hot secrets, TTL 300 s", "fleet_calls", "{:,.0f}"),
    ("  by operation (Get, Describe, BatchGet)", "fleet_ops", "{}"),
    ("  ours refreshing one by one (SMA_REFRESH_BATCH=1)", "fleet_calls_single", "{:,.0f}"),
    ("  by operation", "fleet_ops_single", "{}"),
]


def fmt(value, how):
    if value is None:
        return "n/a"
    if how == "mib":
        return "%.2f" % (value / 1024)  # /proc reports KiB
    return how.format(value)


def print_table(results, binaries):
    names = [name for name, _, _ in binaries]
    others = names[1:]
    ours = results["ours"]
    rows = []
    for label, key, how in ROWS:
        if how == "paired":
            rows.append([label, ""] + [""] * len(others) + ["%.2fx" % results[o][key] for o in others])
            continue
        row = [label, fmt(ours.get(key), how)]
        row += [fmt(results[o].get(key), how) for o in others]
        row += [ratio(ours.get(key), results[o].get(key)) for o in others]
        rows.append(row)
    if os.path.exists(STATIC_BIN):
        size = os.stat(STATIC_BIN).st_size
        rows.insert(0, ["static musl binary, make static (bytes)", "{:,}".format(size)] + [""] * (2 * len(others)))
    header = ["metric", "ours"] + others + ["%s/ours" % o for o in others]
    table = [header] + rows
    widths = [max(len(str(row[i])) for row in table) for i in range(len(header))]
    for n, row in enumerate(table):
        cells = [str(row[0]).ljust(widths[0])] + [str(c).rjust(w) for c, w in zip(row[1:], widths[1:])]
        print(" | ".join(cells).rstrip())
        if n == 0:
            print("-+-".join("-" * w for w in widths))
    print()
    for name, path, _ in binaries:
        print("%s: %s  [%s during its run]" % (name, path, results[name]["load"]))
    print("All on one machine over loopback: wrk, the agent and the fake upstream share the cores;")
    print("figures taken while other work runs are noisy.")


def ratio(a, b):
    if a is None or b is None:
        return "n/a"
    if isinstance(a, str) or isinstance(b, str):
        return ""
    if a == 0:
        return "-" if b == 0 else "inf"
    return "%.2fx" % (b / a)


if __name__ == "__main__":
    main()
