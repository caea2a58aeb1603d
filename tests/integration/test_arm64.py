"""The arm64 build (``make static-arm64``) runs: under qemu user-mode emulation
(``qemu-aarch64-static``, Debian package qemu-user-static) on an x86_64 host,
directly on an aarch64 one.

It serves a secret from the fake Secrets Manager over plain HTTP and over TLS with
a test CA (the handshake, certificate check and record encryption are aws-lc's
aarch64 code, the part of the cross build most likely to go wrong), answers
``--version`` like the host build, and ``make lambda-layer ARCH=arm64`` packs it.

A missing arm64 binary or qemu skips these tests, except in CI (``CI`` set, as
``.ci/run`` runs), which builds the binary and installs qemu first: there they
fail. ``SKIP_STATIC_TESTS=1`` skips them as it skips the other static-build tests.
``ARM64_AGENT_BIN`` points them at another aarch64 build. The tests use the binary
as it is; ``make static-arm64`` rebuilds it after a change.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import zipfile
from pathlib import Path

import pytest

from conftest import (
    DUMMY_CREDS,
    MINIMAL_CONFIG,
    REPO_ROOT,
    Agent,
    _Reader,
    agent_bin,
    agent_env,
    await_listening,
    spawn_agent,
    stop_all,
    unique,
)

# The TLS fake upstream and its test CA are the scratch tests' (imported fixtures
# are used, not collected as tests).
from test_scratch import pki, tls_upstream  # noqa: F401

ARM64_TARGET = "aarch64-unknown-linux-musl"
ARM64_BIN = Path(
    os.environ.get("ARM64_AGENT_BIN")
    or REPO_ROOT / "target" / ARM64_TARGET / "release" / "secrets-manager-agent"
)
LAYER_ZIP = REPO_ROOT / "target" / "lambda" / "secrets-manager-agent-layer-arm64.zip"
SIZE_BUDGET = 4_000_000  # the Makefile's SIZE_BUDGET
EM_AARCH64 = 183  # ELF e_machine
# Under emulation a request costs more CPU than natively; still far below this.
REQ_TIMEOUT = 30


def _unavailable(reason: str):
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI must build and run the arm64 binary: see .ci/run)")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def runner() -> list[str]:
    """The command prefix that runs the arm64 binary here: [qemu] or [] on aarch64."""
    if os.environ.get("SKIP_STATIC_TESTS") == "1":
        pytest.skip("SKIP_STATIC_TESTS=1")
    if not ARM64_BIN.is_file():
        _unavailable(f"arm64 binary {ARM64_BIN} not found: run `make static-arm64`")
    if platform.machine() == "aarch64":
        return []
    qemu = shutil.which("qemu-aarch64-static") or shutil.which("qemu-aarch64")
    if not qemu:
        _unavailable("qemu-aarch64-static not found: apt-get install qemu-user-static")
    return [qemu]


def test_binary_is_a_static_aarch64_executable_within_the_budget(runner):
    data = ARM64_BIN.read_bytes()
    assert data[:4] == b"\x7fELF" and data[4] == 2 and data[5] == 1, "a 64-bit little-endian ELF file"
    assert int.from_bytes(data[18:20], "little") == EM_AARCH64
    # No program header of type PT_INTERP (3) or PT_DYNAMIC (2): nothing for a
    # dynamic loader to do.
    phoff = int.from_bytes(data[32:40], "little")
    phentsize, phnum = int.from_bytes(data[54:56], "little"), int.from_bytes(data[56:58], "little")
    types = [int.from_bytes(data[phoff + i * phentsize: phoff + i * phentsize + 4], "little") for i in range(phnum)]
    assert 3 not in types and 2 not in types, types
    assert len(data) <= SIZE_BUDGET, len(data)


def test_version_matches_the_host_build(runner):
    p = subprocess.run([*runner, str(ARM64_BIN), "--version"], capture_output=True, timeout=30)
    assert p.returncode == 0, p
    host = subprocess.run([str(agent_bin()), "--version"], capture_output=True, timeout=30)
    assert p.stdout == host.stdout and p.stdout.startswith(b"secrets-manager-agent "), (p.stdout, host.stdout)


@pytest.fixture
def start_arm64(runner, tmp_path):
    """Starts the arm64 agent with MINIMAL_CONFIG against `upstream_url`; returns an Agent."""
    procs = []

    def start(upstream_url: str, extra_env=None) -> Agent:
        workdir = tmp_path / f"agent{len(procs)}"
        workdir.mkdir()
        cfg = workdir / "agent.toml"
        cfg.write_text(MINIMAL_CONFIG)
        token = "tok-" + os.urandom(16).hex()
        env = agent_env(upstream_url, token, DUMMY_CREDS, extra_env, home=workdir)
        proc = spawn_agent([*runner, str(ARM64_BIN), "--config", str(cfg)], workdir, env)
        procs.append(proc)
        out, err = _Reader(proc.stdout), _Reader(proc.stderr)
        port = await_listening(proc, out, err, what="arm64 agent")
        return Agent(proc, port, token, workdir, out, err, cfg)

    yield start
    stop_all(procs)


def test_fetches_a_secret_from_the_fake_upstream(start_arm64, fake_upstream):
    ag = start_arm64(fake_upstream.url)
    assert ag.get("/ping", token=False)[0::2] == (200, b"healthy")
    name = unique("arm64")
    for _ in range(2):  # the second answer comes from the cache
        status, _, body = ag.secret(name, timeout=REQ_TIMEOUT)
        assert status == 200, (status, body, ag.stderr[-3000:])
        doc = json.loads(body)
        assert doc["Name"] == name and doc["SecretString"] == "value-of-" + name
    assert fake_upstream.count("GetSecretValue", name) == 1
    _, _, _, headers, _ = fake_upstream.requests("GetSecretValue")[0]
    assert headers.get("authorization", "").startswith("AWS4-HMAC-SHA256 Credential=" + DUMMY_CREDS[0] + "/")
    # SIGTERM goes through qemu to the agent's own handler: a clean exit.
    ag.proc.terminate()
    assert ag.proc.wait(15) == 0, ag.stderr[-3000:]


def test_fetches_a_secret_over_tls(start_arm64, tls_upstream, pki):  # noqa: F811
    ag = start_arm64(tls_upstream.url, {"AWS_CA_BUNDLE": str(pki["ca"])})
    name = unique("arm64-tls")
    status, _, body = ag.secret(name, timeout=REQ_TIMEOUT)
    assert status == 200, (status, body, ag.stderr[-3000:])
    assert json.loads(body)["Name"] == name
    assert tls_upstream.handshakes >= 1 and not tls_upstream.errors()
    assert tls_upstream.count(name=name) == 1


@pytest.mark.xdist_group("make")  # runs make in the repository: one at a time
def test_lambda_layer_zip_holds_the_arm64_binary(runner):
    """`make lambda-layer ARCH=arm64` (static-arm64 finds the binary up to date)."""
    if os.environ.get("ARM64_AGENT_BIN"):
        pytest.skip("ARM64_AGENT_BIN is set: the Makefile packs its own build, not that binary")
    subprocess.run(["make", "-s", "lambda-layer", "ARCH=arm64"], cwd=REPO_ROOT, check=True, timeout=900,
                   stdout=subprocess.DEVNULL)
    with zipfile.ZipFile(LAYER_ZIP) as z:
        infos = z.infolist()
        assert [i.filename for i in infos] == ["extensions/secrets-manager-agent"]
        assert (infos[0].external_attr >> 16) & 0o777 == 0o755
        assert z.read(infos[0]) == ARM64_BIN.read_bytes()
