"""`exec`: a program run with secrets in its environment, against moto with
signatures checked, and the supervisor around it: exit statuses, signals passed
on, zombies reaped as PID 1 of a PID namespace (docs/programs.md)."""

import json
import os
import shutil
import signal
import subprocess
import sys

import pytest

from conftest import DUMMY_CREDS, MINIMAL_CONFIG, agent_bin, agent_env, children, hang, unique, wait_until

RUN_TIMEOUT = 60

# Prints the environment as JSON, and leaves a marker that it ran.
PRINT_ENV = """
import json, os, sys
open(sys.argv[1], "w").write("started")
print(json.dumps(dict(os.environ)))
"""

# Records the signals it gets (one name a line) until SIGTERM, then exits 0.
TRAP = """
import signal, sys, time
out = sys.argv[1]
def record(sig, frame):
    with open(out, "a") as f:
        f.write(signal.Signals(sig).name + "\\n")
    if sig == signal.SIGTERM:
        sys.exit(0)
for s in (signal.SIGTERM, signal.SIGUSR1, signal.SIGHUP):
    signal.signal(s, record)
with open(out, "a") as f:
    f.write("ready\\n")
for _ in range(60):
    time.sleep(1)
sys.exit(3)
"""

# Double fork: a child that starts a grandchild and exits at once, so the
# grandchild is re-parented to the supervisor (PID 1 here) and, when it exits,
# is reaped by nobody else; then waits for SIGTERM.
ORPHAN = """
import os, signal, sys, time
first = os.fork()
if first == 0:
    if os.fork() == 0:
        os._exit(0)
    os._exit(0)
os.waitpid(first, 0)
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
with open(sys.argv[1], "w") as f:
    f.write("forked")
for _ in range(60):
    time.sleep(1)
sys.exit(3)
"""


@pytest.fixture
def exec_env(moto, tmp_path):
    """argv prefix and environment of an `exec` against moto with the admin key."""
    config = tmp_path / "agent.toml"
    config.write_text(MINIMAL_CONFIG)
    config.chmod(0o644)
    env = agent_env(moto.url, None, moto.admin, {"AWS_ENDPOINT_URL_SSM": moto.url, "KEEP_ME": "kept"}, home=tmp_path)

    def argv(*env_args):
        out = [str(agent_bin()), "exec", "--config", str(config)]
        for assignment in env_args:
            out += ["--env", assignment]
        return out + ["--"]

    return argv, env


def script(tmp_path, text):
    path = tmp_path / f"{unique('child')}.py"
    path.write_text(text)
    return [sys.executable, str(path)]


def run(argv, env, cwd):
    return subprocess.run(argv, env=env, cwd=cwd, capture_output=True, timeout=RUN_TIMEOUT, text=True)


def test_every_reference_form_in_the_environment(moto, exec_env, tmp_path):
    argv, env = exec_env
    sm, ssm = moto.client(), moto.client("ssm")
    plain, doc = unique("plain"), unique("doc")
    sm.create_secret(Name=plain, SecretString="hunter2 with spaces")
    arn = sm.create_secret(Name=doc, SecretString=json.dumps({"user": "admin", "port": 5432, "pw": 'p"w'}))["ARN"]
    param = "/app/" + unique("db")
    ssm.put_parameter(Name=param, Value="s3cr3t-param", Type="SecureString")
    marker = tmp_path / "started"
    r = run(
        argv(f"PLAIN={plain}", f"USER={doc}#user", f"PW={arn}:pw::", f"PORT={arn}:port:AWSCURRENT:",
             f"WHOLE={doc}", f"PARAM=ssm:{param}")
        + script(tmp_path, PRINT_ENV) + [str(marker)],
        env, tmp_path,
    )
    assert r.returncode == 0, r.stderr
    assert r.stderr == ""
    seen = json.loads(r.stdout)
    assert seen["PLAIN"] == "hunter2 with spaces"
    assert seen["USER"] == "admin"
    assert seen["PW"] == 'p"w'
    assert seen["PORT"] == "5432"  # a JSON number, as JSON
    assert json.loads(seen["WHOLE"]) == {"user": "admin", "port": 5432, "pw": 'p"w'}
    assert seen["PARAM"] == "s3cr3t-param"  # the SecureString, decrypted
    assert seen["KEEP_ME"] == "kept", "the rest of the environment is passed on"


@pytest.mark.parametrize("case", ["missing secret", "missing key", "binary", "denied", "bad reference"])
def test_a_value_that_cannot_be_had_starts_nothing(moto, exec_env, tmp_path, case):
    argv, env = exec_env
    sm = moto.client()
    good, name = unique("good"), unique("s")
    sm.create_secret(Name=good, SecretString="fine-value")
    sm.create_secret(Name=name, SecretString=json.dumps({"user": "admin-value"}))
    reference, why = {
        "missing secret": (unique("nope"), "ResourceNotFoundException"),
        "missing key": (f"{name}#password", 'has no JSON key "password"'),
        "binary": (None, "binary"),
        "denied": (name, "AccessDenied"),
        "bad reference": ("ssm:", "is not a reference"),
    }[case]
    if case == "binary":
        reference = unique("bin")
        sm.create_secret(Name=reference, SecretBinary=b"\x00\x01")
    if case == "denied":
        env = dict(env, AWS_ACCESS_KEY_ID=moto.denied[0], AWS_SECRET_ACCESS_KEY=moto.denied[1])
    marker = tmp_path / "started"
    # With the denied key the first variable fails already: it alone then.
    assignments = [f"BROKEN={reference}"] if case == "denied" else [f"FIRST={good}", f"BROKEN={reference}"]
    r = run(argv(*assignments) + script(tmp_path, PRINT_ENV) + [str(marker)], env, tmp_path)
    assert r.returncode == 1, (r.returncode, r.stderr)
    assert not marker.exists(), "the command must not start"
    assert r.stdout == ""
    lines = r.stderr.splitlines()
    assert len(lines) == 1, r.stderr
    assert "BROKEN" in lines[0] and reference in lines[0] and why in lines[0], lines[0]
    assert "fine-value" not in r.stderr and "admin-value" not in r.stderr


def test_statuses_of_the_command(exec_env, tmp_path):
    argv, env = exec_env
    r = run(argv() + [sys.executable, "-c", "import sys; sys.exit(7)"], env, tmp_path)
    assert (r.returncode, r.stderr) == (7, "")
    r = run(argv() + [sys.executable, "-c", "import os, signal; os.kill(os.getpid(), signal.SIGTERM)"], env, tmp_path)
    assert r.returncode == 128 + signal.SIGTERM
    r = run(argv() + ["no-such-command-" + unique("x")], env, tmp_path)
    assert r.returncode == 127
    assert "command not found" in r.stderr


def test_a_stop_during_the_fetch_starts_nothing(exec_env, fake_upstream, tmp_path):
    argv, env = exec_env
    env = dict(env, AWS_ENDPOINT_URL_SECRETS_MANAGER=fake_upstream.url,
               AWS_ACCESS_KEY_ID=DUMMY_CREDS[0], AWS_SECRET_ACCESS_KEY=DUMMY_CREDS[1])
    fake_upstream.set_default("GetSecretValue", hang(30))
    marker = tmp_path / "started"
    proc = subprocess.Popen(argv("SLOW=slow-secret") + script(tmp_path, PRINT_ENV) + [str(marker)], env=env,
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        wait_until(lambda: fake_upstream.calls, timeout=10, what="the fetch to reach the upstream")
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=10)  # not the 30 s the upstream hangs
        assert proc.returncode == 128 + signal.SIGTERM, err
        assert not marker.exists(), "the command must not start"
        assert err.splitlines() == ["secrets-manager-agent: error: signal 15 came before the command started; it was not started"]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=10)


def _lines(path):
    try:
        return path.read_text().split()
    except FileNotFoundError:
        return []


def test_signals_reach_the_command(moto, exec_env, tmp_path):
    argv, env = exec_env
    name = unique("sig")
    moto.client().create_secret(Name=name, SecretString="v")
    got = tmp_path / "got"
    proc = subprocess.Popen(argv(f"V={name}") + script(tmp_path, TRAP) + [str(got)], env=env, cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    try:
        wait_until(lambda: "ready" in _lines(got), timeout=30, what="the command to start")
        for sig in (signal.SIGUSR1, signal.SIGHUP):
            proc.send_signal(sig)
            wait_until(lambda: sig.name in _lines(got), timeout=10, what=f"{sig.name} at the command")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0  # the command's own status after its trap
        assert _lines(got) == ["ready", "SIGUSR1", "SIGHUP", "SIGTERM"]
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=10)


def _state(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            return next(line.split()[1] for line in f if line.startswith("State:"))
    except (OSError, StopIteration):
        return None


def _unshare_works():
    if os.geteuid() != 0 or not shutil.which("unshare"):
        return False
    try:
        return subprocess.run(["unshare", "--pid", "--fork", "--mount-proc", "true"], timeout=10,
                              capture_output=True).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@pytest.mark.skipif(not _unshare_works(), reason="needs root and a working `unshare --pid --fork --mount-proc`")
def test_orphans_are_reaped_as_pid_one(exec_env, tmp_path):
    argv, env = exec_env
    forked = tmp_path / "forked"
    proc = subprocess.Popen(["unshare", "--pid", "--fork", "--mount-proc", *argv(), *script(tmp_path, ORPHAN), str(forked)],
                            env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    try:
        supervisor = wait_until(lambda: children(proc.pid), timeout=10, what="exec under unshare")[0]
        with open(f"/proc/{supervisor}/status") as f:
            nspid = [line for line in f if line.startswith("NSpid:")][0].split()
        assert nspid[-1] == "1", nspid  # PID 1 inside its namespace
        wait_until(forked.exists, timeout=30, what="the command's double fork")
        # The orphan has exited by now or soon; once reaped, only the command is left.
        wait_until(lambda: len(children(supervisor)) == 1, timeout=10, what="the orphan to be reaped")
        [command] = children(supervisor)
        assert _state(command) in ("S", "R"), "the command still runs"
        assert not [p for p in children(supervisor) if _state(p) == "Z"]
        os.kill(supervisor, signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=10)
