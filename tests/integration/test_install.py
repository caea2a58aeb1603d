"""install.sh: staged installs (--root DIR), units, token writer, idempotence, uninstall.

Everything runs in throw-away staging trees under /tmp: no user, group, unit or file
of this machine is touched. Parts that need root (file ownership, running the agent
as the staged user) are skipped without it; `systemd-analyze` and `shellcheck` checks
are skipped when the tools are missing.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import stat
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

try:
    import tomllib  # Python 3.11+
except ModuleNotFoundError:  # 3.10: the config is still checked by the agent run below
    tomllib = None

from conftest import DUMMY_CREDS, LISTEN_RE, _Reader, _stop, agent_bin, http_request, respond

REPO_ROOT = Path(__file__).resolve().parents[2]
INSTALL_SH = REPO_ROOT / "install.sh"

AGENT_DIR = "/opt/aws/secretsmanageragent"
BIN = f"{AGENT_DIR}/bin/secrets-manager-agent"
CONFIG = f"{AGENT_DIR}/etc/config.toml"
LOGS = f"{AGENT_DIR}/logs"
MANIFEST = f"{AGENT_DIR}/.install-manifest"
UNIT_DIR = "/etc/systemd/system"
WANTS = f"{UNIT_DIR}/multi-user.target.wants"
AGENT_UNIT = "secrets-manager-agent.service"
TOKEN_UNIT = "secrets-manager-agent-token.service"
TOKEN_FILE = "/var/run/awssmatoken"
USER = "awssmauser"
GROUP = "awssmatokenreader"

IS_ROOT = os.geteuid() == 0
needs_root = pytest.mark.skipif(not IS_ROOT, reason="needs root (ownership / running as the staged user)")

# path -> (type, mode) of everything a fresh install into an empty root creates
EXPECTED_TREE = {
    "/etc": ("d", 0o755),
    "/etc/passwd": ("f", 0o644),
    "/etc/group": ("f", 0o644),
    "/etc/systemd": ("d", 0o755),
    UNIT_DIR: ("d", 0o755),
    f"{UNIT_DIR}/{AGENT_UNIT}": ("f", 0o644),
    f"{UNIT_DIR}/{TOKEN_UNIT}": ("f", 0o644),
    WANTS: ("d", 0o755),
    f"{WANTS}/{AGENT_UNIT}": ("l", None),
    f"{WANTS}/{TOKEN_UNIT}": ("l", None),
    "/opt": ("d", 0o755),
    "/opt/aws": ("d", 0o755),
    AGENT_DIR: ("d", 0o755),
    MANIFEST: ("f", 0o644),
    f"{AGENT_DIR}/bin": ("d", 0o755),
    BIN: ("f", 0o755),
    f"{AGENT_DIR}/etc": ("d", 0o755),
    CONFIG: ("f", 0o644),
    LOGS: ("d", 0o750),
}

AGENT_HARDENING = {
    "NoNewPrivileges": "yes",
    "ProtectSystem": "strict",
    "ProtectHome": "yes",
    "PrivateTmp": "yes",
    "PrivateDevices": "yes",
    "CapabilityBoundingSet": "",
    "RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX",
    "ProtectKernelTunables": "yes",
    "ProtectKernelModules": "yes",
    "ProtectControlGroups": "yes",
    "RestrictNamespaces": "yes",
    "LockPersonality": "yes",
    "MemoryDenyWriteExecute": "yes",
    "SystemCallArchitectures": "native",
    "UMask": "0077",
    "ReadWritePaths": LOGS,
}

KNOWN_CONFIG_KEYS = {
    "log_level", "log_to_file", "http_port", "region", "ttl_seconds", "cache_size", "ssrf_headers",
    "ssrf_env_variables", "path_prefix", "max_conn", "ignore_transient_errors", "validate_credentials",
    "credentials_file_path",
}  # fmt: skip

HEX64 = re.compile(r"[0-9a-f]{64}\n?")


# --------------------------------------------------------------------------- helpers


@pytest.fixture(scope="module")
def binary() -> Path:
    b = agent_bin()
    if not b.exists():
        pytest.fail(f"agent binary {b} not found (cargo build, or set AGENT_BIN)")
    return b


@pytest.fixture
def root():
    """An empty staging root that other users can traverse (the agent runs as the staged uid)."""
    d = Path(tempfile.mkdtemp(prefix="sma-install-"))
    d.chmod(0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def run_install(root: Path | None, *args, binary: Path | None = None, expect: int | None = 0, script=INSTALL_SH, **kw):
    argv = ["bash", str(script)]
    if root is not None:
        argv += ["--root", str(root)]
    if binary is not None:
        argv += ["--binary", str(binary)]
    argv += list(args)
    p = subprocess.run(argv, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL, **kw)
    if expect is not None:
        assert p.returncode == expect, f"{argv} -> rc {p.returncode}\nstdout: {p.stdout}\nstderr: {p.stderr}"
    return p


def P(root: Path, path: str) -> Path:
    """A target path inside the staging root."""
    return root / path.lstrip("/")


def snapshot(root: Path) -> dict:
    """path -> (type, mode, uid, gid, sha256 or link target) for everything below root."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            st = p.lstat()
            rel = "/" + str(p.relative_to(root))
            if stat.S_ISLNK(st.st_mode):
                out[rel] = ("l", None, st.st_uid, st.st_gid, os.readlink(p))
            elif stat.S_ISDIR(st.st_mode):
                out[rel] = ("d", stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, None)
            else:
                digest = hashlib.sha256(p.read_bytes()).hexdigest()
                out[rel] = ("f", stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, digest)
    return out


def entries(path: Path) -> dict[str, list[str]]:
    """name -> fields of a passwd/group-style file."""
    if not path.exists():
        return {}
    return {line.split(":")[0]: line.split(":") for line in path.read_text().splitlines() if line}


def staged_ids(root: Path):
    """(uid, primary gid of awssmauser, gid of awssmatokenreader) from the staging files."""
    pw = entries(root / "etc/passwd")[USER]
    gr = entries(root / "etc/group")
    return int(pw[2]), int(pw[3]), int(gr[GROUP][2])


def parse_unit(text: str) -> dict[str, list[tuple[str, str]]]:
    """section -> [(key, value), ...] in order (systemd keys may repeat)."""
    sections: dict[str, list[tuple[str, str]]] = {}
    cur = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        assert not line.endswith("\\"), f"no line continuations expected: {raw!r}"
        if line.startswith("["):
            cur = line.strip("[]")
            sections.setdefault(cur, [])
            continue
        assert cur is not None and "=" in line, raw
        k, v = line.split("=", 1)
        sections[cur].append((k.strip(), v.strip()))
    return sections


def values(unit, section, key) -> list[str]:
    return [v for k, v in unit.get(section, []) if k == key]


def one(unit, section, key) -> str:
    vs = values(unit, section, key)
    assert len(vs) == 1, f"[{section}] {key}= expected once, found {vs}"
    return vs[0]


def token_command(root: Path, gid: int) -> str:
    """The token unit's shell command with its paths moved into the staging root (and
    the group given by number, since the staged group does not exist on this host)."""
    unit = parse_unit(P(root, f"{UNIT_DIR}/{TOKEN_UNIT}").read_text())
    exec_start = one(unit, "Service", "ExecStart")
    m = re.fullmatch(r"/bin/sh -c '([^']*)'", exec_start)
    assert m, f"ExecStart is not /bin/sh -c '...': {exec_start!r}"
    cmd = m.group(1)
    for old, new, n in (
        (TOKEN_FILE, str(P(root, TOKEN_FILE)), None),
        (BIN, str(P(root, BIN)), 1),
        (f"chgrp {GROUP} ", f"chgrp {gid} ", 1),
    ):
        count = cmd.count(old)
        assert count and (n is None or count == n), (old, cmd)
        cmd = cmd.replace(old, new)
    return cmd


def write_token(root: Path, gid: int) -> Path:
    P(root, "/var/run").mkdir(parents=True, exist_ok=True)
    subprocess.run(["/bin/sh", "-c", token_command(root, gid)], check=True, timeout=30)
    return P(root, TOKEN_FILE)


def token_gid(root: Path) -> int:
    """The token file's group in these tests: the staged one when root may chgrp to it."""
    return staged_ids(root)[2] if IS_ROOT else os.getgid()


# --------------------------------------------------------------------------- the script itself


def test_script_syntax_and_shellcheck():
    assert os.access(INSTALL_SH, os.X_OK), "install.sh should be executable"
    subprocess.run(["bash", "-n", str(INSTALL_SH)], check=True, timeout=30)
    if shutil.which("shellcheck") is None:
        pytest.skip("shellcheck not installed")
    p = subprocess.run(["shellcheck", str(INSTALL_SH)], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stdout + p.stderr


def test_help_and_usage_errors(root):
    p = run_install(None, "--help")
    for word in ("--root", "--binary", "--uninstall", GROUP, TOKEN_FILE, BIN):
        assert word in p.stdout, word
    p = run_install(root, "--bogus", expect=2)
    assert "unknown argument: --bogus" in p.stderr
    p = run_install(None, "--root", expect=2)
    p = run_install(root / "missing", expect=1)
    assert "not an existing directory" in p.stderr
    assert snapshot(root) == {}


def test_live_install_needs_root(root):
    """Without --root it refuses to run unprivileged, before touching anything."""
    kw = {"user": 65534, "group": 65534, "extra_groups": []} if IS_ROOT else {}
    p = run_install(None, expect=1, **kw)
    assert "must run as root" in p.stderr
    p = run_install(None, "--uninstall", expect=1, **kw)
    assert "must run as root" in p.stderr


def test_rejects_a_binary_that_is_not_the_agent(root, binary):
    p = run_install(root, binary=Path("/bin/true"), expect=1)
    assert "did not print a 64-hex-digit token" in p.stderr
    p = run_install(root, binary=root / "nope", expect=1)
    assert "no such file" in p.stderr
    assert snapshot(root) == {}, "nothing may be created when the binary is rejected"


def test_refuses_when_aws_agent_is_installed(root, binary):
    P(root, UNIT_DIR).mkdir(parents=True)
    P(root, f"{UNIT_DIR}/awssmastartup.service").write_text("[Service]\nExecStart=/bin/true\n")
    before = snapshot(root)
    p = run_install(root, binary=binary, expect=1)
    assert "AWS's Secrets Manager Agent is installed" in p.stderr
    assert snapshot(root) == before


def test_default_binary_is_the_one_next_to_install_sh(root, binary, tmp_path):
    shutil.copy(INSTALL_SH, tmp_path / "install.sh")
    shutil.copy(binary, tmp_path / "secrets-manager-agent")
    run_install(root, script=tmp_path / "install.sh")
    assert P(root, BIN).read_bytes() == binary.read_bytes()
    (tmp_path / "secrets-manager-agent").unlink()
    p = run_install(root, script=tmp_path / "install.sh", expect=1)
    assert "no agent binary found" in p.stderr


# --------------------------------------------------------------------------- a fresh install


def test_fresh_install_tree(root, binary):
    run_install(root, binary=binary)
    snap = snapshot(root)
    assert set(snap) == set(EXPECTED_TREE), (
        f"unexpected: {sorted(set(snap) - set(EXPECTED_TREE))}, missing: {sorted(set(EXPECTED_TREE) - set(snap))}"
    )
    for path, (kind, mode) in EXPECTED_TREE.items():
        assert snap[path][0] == kind, path
        if mode is not None:
            assert snap[path][1] == mode, f"{path}: mode {oct(snap[path][1])}, want {oct(mode)}"

    # the binary is the one given; enabled through multi-user.target like systemctl enable does
    assert P(root, BIN).read_bytes() == binary.read_bytes()
    for u in (AGENT_UNIT, TOKEN_UNIT):
        assert os.readlink(P(root, f"{WANTS}/{u}")) == f"{UNIT_DIR}/{u}"

    # the dedicated system user and the token group, in the staging passwd/group
    pw = entries(root / "etc/passwd")
    gr = entries(root / "etc/group")
    assert set(pw) == {USER} and set(gr) == {USER, GROUP}
    _, _, uid, gid, _gecos, home, shell = pw[USER]
    assert 100 <= int(uid) < 1000 and 100 <= int(gid) < 1000, "a system id, as useradd --system picks"
    assert gr[USER][2] == gid, "primary group is the user's own group"
    assert 100 <= int(gr[GROUP][2]) < 1000 and gr[GROUP][2] != gid
    assert home == AGENT_DIR
    assert shell.endswith("nologin") or shell == "/bin/false"

    # owners: everything root's, except the logs directory (the agent writes there)
    if IS_ROOT:
        for path, (_, _, u, g, _) in snap.items():
            want = (int(uid), int(gid)) if path == LOGS else (0, 0)
            assert (u, g) == want, f"{path}: owned by {u}:{g}, want {want}"


def test_agent_unit(root, binary):
    run_install(root, binary=binary)
    text = P(root, f"{UNIT_DIR}/{AGENT_UNIT}").read_text()
    unit = parse_unit(text)
    assert TOKEN_UNIT in one(unit, "Unit", "Requires").split()
    assert TOKEN_UNIT in one(unit, "Unit", "After").split()
    assert one(unit, "Service", "ExecStart") == f"{BIN} --config {CONFIG}"
    assert one(unit, "Service", "WorkingDirectory") == AGENT_DIR
    assert one(unit, "Service", "User") == USER
    assert one(unit, "Service", "Group") == USER
    assert one(unit, "Service", "SupplementaryGroups") == GROUP
    assert values(unit, "Service", "Environment") == [f"AWS_TOKEN=file://{TOKEN_FILE}"]
    assert one(unit, "Service", "Restart") == "on-failure"
    for key, want in AGENT_HARDENING.items():
        assert one(unit, "Service", key) == want, key
    assert one(unit, "Install", "WantedBy") == "multi-user.target"
    # systemd would expand % specifiers and $VARIABLES: there must be none
    for k, v in unit["Service"]:
        assert "%" not in v and "$" not in v, f"{k}={v}"


def test_token_unit(root, binary):
    run_install(root, binary=binary)
    unit = parse_unit(P(root, f"{UNIT_DIR}/{TOKEN_UNIT}").read_text())
    assert one(unit, "Service", "Type") == "oneshot"
    assert one(unit, "Service", "RemainAfterExit") == "yes"
    assert values(unit, "Service", "User") == [], "the token writer runs as root (it chgrps the file)"
    assert one(unit, "Install", "WantedBy") == "multi-user.target"
    assert AGENT_UNIT in one(unit, "Unit", "Before").split()
    cmd = one(unit, "Service", "ExecStart")
    assert f"{BIN} token" in cmd, "the token comes from the agent binary"
    assert "%" not in cmd and "$" not in cmd
    for key in ("NoNewPrivileges", "ProtectSystem", "ProtectHome", "PrivateTmp", "PrivateNetwork"):
        assert values(unit, "Service", key), key


def test_token_command_writes_a_fresh_0640_token(root, binary):
    run_install(root, binary=binary)
    gid = token_gid(root)
    tok = write_token(root, gid)
    st = tok.stat()
    assert stat.S_IMODE(st.st_mode) == 0o640, oct(st.st_mode)
    assert st.st_gid == gid
    if IS_ROOT:
        assert st.st_uid == 0
    first = tok.read_text()
    assert HEX64.fullmatch(first), first
    assert not P(root, TOKEN_FILE + ".tmp").exists()

    # a stale, world-readable temp file from an interrupted run does not leak its mode
    P(root, TOKEN_FILE + ".tmp").write_text("stale")
    P(root, TOKEN_FILE + ".tmp").chmod(0o666)
    write_token(root, gid)
    assert stat.S_IMODE(tok.stat().st_mode) == 0o640
    second = tok.read_text()
    assert HEX64.fullmatch(second) and second != first, "every run writes a new token"
    assert not P(root, TOKEN_FILE + ".tmp").exists()


def test_config_is_valid(root, binary):
    if tomllib is None:
        pytest.skip("tomllib needs Python 3.11")
    run_install(root, binary=binary)
    cfg = tomllib.loads(P(root, CONFIG).read_text())
    assert set(cfg) <= KNOWN_CONFIG_KEYS, set(cfg) - KNOWN_CONFIG_KEYS
    assert cfg["log_to_file"] is True
    assert cfg["http_port"] == 2773
    assert cfg.get("log_level", "INFO") == "INFO"


STS_OK = (
    '<GetCallerIdentityResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/"><GetCallerIdentityResult>'
    "<Arn>arn:aws:iam::123456789012:user/test</Arn><UserId>AIDEXAMPLE</UserId><Account>123456789012</Account>"
    "</GetCallerIdentityResult></GetCallerIdentityResponse>"
)


def start_installed_agent(root: Path, upstream_url: str, supplementary: bool):
    """Run the staged binary as systemd would: the installed config (http_port moved to 0
    so the test cannot collide with a real agent), the unit's working directory and
    AWS_TOKEN, and, when root, the staged user with or without the token group."""
    cfg_text = P(root, CONFIG).read_text()
    assert cfg_text.count("http_port = 2773") == 1
    test_cfg = root / "test-config.toml"
    test_cfg.write_text(cfg_text.replace("http_port = 2773", "http_port = 0"))
    test_cfg.chmod(0o644)
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(P(root, AGENT_DIR)),
        "AWS_TOKEN": f"file://{P(root, TOKEN_FILE)}",
        "AWS_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": DUMMY_CREDS[0],
        "AWS_SECRET_ACCESS_KEY": DUMMY_CREDS[1],
        "AWS_ENDPOINT_URL": upstream_url,  # Secrets Manager and STS (validate_credentials)
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_CONFIG_FILE": "/nonexistent",
        "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent",
    }
    kw = {}
    if IS_ROOT:
        uid, gid, tgid = staged_ids(root)
        kw = {"user": uid, "group": gid, "extra_groups": [tgid] if supplementary else []}
    return subprocess.Popen(
        [str(P(root, BIN)), "--config", str(test_cfg)],
        cwd=P(root, AGENT_DIR),
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
        umask=0o077,
        **kw,
    )


def test_installed_agent_runs_as_the_unit_would(root, binary, fake_upstream):
    """The installed config, layout and token file work together: the agent reads the
    token through the token group, logs under the installed logs directory and serves."""
    run_install(root, binary=binary)
    token = write_token(root, token_gid(root)).read_text().strip()
    fake_upstream.set_default("", respond(200, STS_OK, {"Content-Type": "text/xml"}))
    fake_upstream.set_secret("prod/db", "s3cr3t")

    proc = start_installed_agent(root, fake_upstream.url, supplementary=True)
    out, err = _Reader(proc.stdout), _Reader(proc.stderr)
    try:
        deadline = time.monotonic() + 15
        while not LISTEN_RE.search(out.text()) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        m = LISTEN_RE.search(out.text())
        assert m, f"agent did not start (rc={proc.poll()})\nstdout: {out.text()}\nstderr: {err.text()}"
        port = int(m.group(1))
        status, _, body = http_request(port, "/secretsmanager/get?secretId=prod/db", headers={"X-Aws-Parameters-Secrets-Token": token})
        assert status == 200 and b"s3cr3t" in body, (status, body)
        status, _, body = http_request(port, "/secretsmanager/get?secretId=prod/db", headers={"X-Aws-Parameters-Secrets-Token": "0" * 64})
        assert (status, body) == (403, b"Bad Token")
    finally:
        _stop(proc)
        out.join(5)
        err.join(5)

    log = P(root, f"{LOGS}/secrets_manager_agent.log")
    assert log.exists(), sorted(p.name for p in P(root, LOGS).iterdir())
    assert token not in log.read_text() and "s3cr3t" not in log.read_text()
    if IS_ROOT:
        assert log.stat().st_uid == staged_ids(root)[0]
        assert stat.S_IMODE(log.stat().st_mode) & 0o077 == 0, "UMask=0077: the log is private"

    # uninstall removes the token file and the agent's logs along with the rest
    (root / "test-config.toml").unlink()
    assert P(root, TOKEN_FILE).exists()
    run_install(root, "--uninstall")
    assert set(snapshot(root)) == {"/var", "/var/run"}, "only the directories the test made are left"


@needs_root
def test_without_the_token_group_the_agent_cannot_read_the_token(root, binary):
    run_install(root, binary=binary)
    write_token(root, token_gid(root))
    proc = start_installed_agent(root, "http://127.0.0.1:9", supplementary=False)
    try:
        _, err = proc.communicate(timeout=15)
    finally:
        _stop(proc)
    assert proc.returncode == 1, err
    assert b"awssmatoken" in err or b"token" in err.lower(), err


# --------------------------------------------------------------------------- idempotence, upgrade


def test_second_run_changes_nothing(root, binary):
    run_install(root, binary=binary)
    first = snapshot(root)
    p = run_install(root, binary=binary)
    assert snapshot(root) == first
    assert "created" not in p.stdout and "keeping" not in p.stdout, p.stdout


def test_upgrade_replaces_the_binary_and_keeps_an_edited_config(root, binary, tmp_path):
    run_install(root, binary=binary)
    manifest = P(root, MANIFEST).read_text()
    edited = P(root, CONFIG).read_text().replace('log_level = "INFO"', 'log_level = "DEBUG"')
    P(root, CONFIG).write_text(edited)
    newer = tmp_path / "secrets-manager-agent"
    newer.write_bytes(binary.read_bytes() + b"\0upgrade")
    newer.chmod(0o755)
    p = run_install(root, binary=newer)
    assert P(root, BIN).read_bytes() == newer.read_bytes()
    assert stat.S_IMODE(P(root, BIN).stat().st_mode) == 0o755
    assert P(root, CONFIG).read_text() == edited
    assert "keeping the existing" in p.stdout
    assert P(root, MANIFEST).read_text() == manifest
    assert not list(P(root, f"{AGENT_DIR}/bin").glob("*.new.*")), "no temp file left behind"


# --------------------------------------------------------------------------- uninstall


def test_uninstall_leaves_an_empty_root(root, binary):
    run_install(root, binary=binary)
    run_install(root, "--uninstall")
    assert snapshot(root) == {}
    p = run_install(root, "--uninstall")  # again: nothing to do, no error
    assert "nothing to uninstall" in p.stdout
    assert snapshot(root) == {}


def make_system_like_root(root: Path):
    """A staging root that looks like an installed system: /etc/passwd with an id at 999
    in use, shadow files, existing unit and /opt directories."""
    etc = root / "etc"
    (etc / "systemd/system/multi-user.target.wants").mkdir(parents=True)
    (etc / "systemd/system/other.service").write_text("[Service]\nExecStart=/bin/true\n")
    (root / "opt").mkdir()
    (root / "var/run").mkdir(parents=True)
    (etc / "passwd").write_text("root:x:0:0:root:/root:/bin/bash\nsystemd-network:x:999:999::/:/usr/sbin/nologin\n")
    (etc / "group").write_text("root:x:0:\nsystemd-network:x:999:\n")
    (etc / "shadow").write_text("root:*:19000:0:99999:7:::\nsystemd-network:!*:19000::::::")  # no final newline
    (etc / "gshadow").write_text("root:*::\nsystemd-network:!::\n")
    (etc / "shadow").chmod(0o640)
    (etc / "gshadow").chmod(0o640)


def test_system_like_root_install_twice_and_uninstall(root, binary):
    make_system_like_root(root)
    before = snapshot(root)
    run_install(root, binary=binary)
    after_first = snapshot(root)
    pw = entries(root / "etc/passwd")
    gr = entries(root / "etc/group")
    ids = {int(pw[USER][2]), int(pw[USER][3]), int(gr[GROUP][2])}
    assert 999 not in ids, "ids in use are skipped"
    assert USER in entries(root / "etc/shadow") and "systemd-network" in entries(root / "etc/shadow")
    assert GROUP in entries(root / "etc/gshadow") and USER in entries(root / "etc/gshadow")
    assert stat.S_IMODE((root / "etc/shadow").stat().st_mode) == 0o640
    for u in (AGENT_UNIT, TOKEN_UNIT):
        assert P(root, f"{WANTS}/{u}").is_symlink()

    run_install(root, binary=binary)
    assert snapshot(root) == after_first

    run_install(root, "--uninstall")
    after = snapshot(root)
    # the shadow file lost the missing final newline it had; everything else is as before
    assert (root / "etc/shadow").read_text() == "root:*:19000:0:99999:7:::\nsystemd-network:!*:19000::::::\n"
    del before["/etc/shadow"], after["/etc/shadow"]
    assert after == before


def test_preexisting_user_group_and_config_are_kept(root, binary):
    (root / "etc").mkdir()
    (root / "etc/passwd").write_text(f"{USER}:x:500:500::/nonexistent:/usr/sbin/nologin\n")
    (root / "etc/group").write_text(f"{USER}:x:500:\n{GROUP}:x:501:\n")
    P(root, f"{AGENT_DIR}/etc").mkdir(parents=True)
    P(root, CONFIG).write_text('log_to_file = false\nregion = "eu-west-1"\n')
    before = snapshot(root)

    p = run_install(root, binary=binary)
    assert "created" not in p.stdout
    assert P(root, CONFIG).read_text() == 'log_to_file = false\nregion = "eu-west-1"\n'
    assert (root / "etc/passwd").read_text() == f"{USER}:x:500:500::/nonexistent:/usr/sbin/nologin\n"
    if IS_ROOT:
        st = P(root, LOGS).stat()
        assert (st.st_uid, st.st_gid) == (500, 500)

    run_install(root, "--uninstall")
    assert snapshot(root) == before, "the user, group, config and directories that were there stay"


# --------------------------------------------------------------------------- systemd's own checks


def staged_units_for_systemd(root: Path, dest: Path) -> list[Path]:
    """Copies of the staged units with /opt/aws/... pointing into the staging root, so
    systemd-analyze finds the binaries their ExecStart= lines name."""
    out = []
    for u in (AGENT_UNIT, TOKEN_UNIT):
        text = P(root, f"{UNIT_DIR}/{u}").read_text().replace("/opt/aws/", f"{root}/opt/aws/")
        (dest / u).write_text(text)
        out.append(dest / u)
    return out


def test_systemd_analyze_verify(root, binary, tmp_path):
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze not installed")
    run_install(root, binary=binary)
    units = staged_units_for_systemd(root, tmp_path)
    p = subprocess.run(
        ["systemd-analyze", "verify", *[f"./{u.name}" for u in units]],
        cwd=tmp_path, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert p.returncode == 0, p.stdout + p.stderr
    assert p.stdout.strip() == "" and p.stderr.strip() == "", p.stdout + p.stderr


def test_systemd_analyze_security(root, binary):
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze not installed")
    run_install(root, binary=binary)
    for u in (AGENT_UNIT, TOKEN_UNIT):
        p = subprocess.run(
            ["systemd-analyze", "security", "--no-pager", "--offline=yes", str(P(root, f"{UNIT_DIR}/{u}"))],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        if p.returncode != 0 and "offline" in p.stderr:
            pytest.skip("this systemd-analyze has no --offline (systemd < 250)")
        m = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", p.stdout)
        assert m, p.stdout + p.stderr
        assert float(m.group(1)) <= 2.0, f"{u}: exposure {m.group(1)}\n{p.stdout}"
