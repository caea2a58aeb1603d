"""Deployment files: Dockerfile, .dockerignore and examples/.

No container engine runs here, so these tests check what can be checked without
one: every file parses (JSON, YAML, TOML, Dockerfile syntax), names the right
binary, port, user and variables, and the pieces agree with each other (the token
path the agent reads is the one the init container writes and the app reads).
The parts that run anywhere also run for real: the init containers' token
scripts, the container config with the agent binary, and the Kubernetes app
script against the agent (when `wget` is installed).
"""

from __future__ import annotations

import fnmatch
import json
import os
import posixpath
import re
import shlex
import shutil
import signal
import stat
import subprocess
import time
from pathlib import Path

import pytest

from conftest import REPO_ROOT, agent_bin

yaml = pytest.importorskip("yaml", reason="PyYAML is needed to parse examples/kubernetes-pod.yaml")

try:
    import tomllib  # Python 3.11+
except ModuleNotFoundError:  # pragma: no cover - Python 3.10
    tomllib = None


def load_toml(text: str) -> dict:
    if tomllib is None:
        pytest.skip("parsing TOML needs Python 3.11+ (tomllib)")
    return tomllib.loads(text)

BIN_NAME = "secrets-manager-agent"
PORT = 2773
# The Rust target of each platform the Dockerfile builds (BuildKit's TARGETARCH),
# with the `uname -m` of a build stage running on that platform.
MUSL_TARGETS = {"amd64": "x86_64-unknown-linux-musl", "arm64": "aarch64-unknown-linux-musl"}
UNAME = {"amd64": "x86_64", "arm64": "aarch64"}
# Where the build stage writes the chosen target, and copies the binary to.
RUST_TARGET_FILE = "/rust-target"
OUT_BIN = "/out/secrets-manager-agent"
DOCKERFILE = REPO_ROOT / "Dockerfile"
DOCKERIGNORE = REPO_ROOT / ".dockerignore"
EXAMPLES = REPO_ROOT / "examples"
CONTAINER_CONFIG = EXAMPLES / "container-config.toml"
ECS_TASK = EXAMPLES / "ecs-task-definition.json"
K8S_POD = EXAMPLES / "kubernetes-pod.yaml"
TOKEN_RE = re.compile(r"[0-9a-f]{64}")

# The top-level config keys the agent accepts (docs/configuration.md, "Settings"): the flat
# keys, and the sections of AWS's 3.x layout.
CONFIG_KEYS = {
    "log_level", "log_to_file", "http_port", "region", "ttl_seconds", "cache_size",
    "ssrf_headers", "ssrf_env_variables", "path_prefix", "max_conn",
    "ignore_transient_errors", "validate_credentials", "credentials_file_path",
    "max_roles", "prefetch", "logging", "capabilities",
}


# --------------------------------------------------------------------------- Dockerfile parsing


class Stage:
    def __init__(self, image: str, alias: str | None):
        self.image = image
        self.alias = alias
        self.instructions: list[tuple[str, str]] = []  # (INSTRUCTION, arguments)

    def all(self, instr: str) -> list[str]:
        return [args for i, args in self.instructions if i == instr]

    def one(self, instr: str) -> str:
        found = self.all(instr)
        assert len(found) == 1, f"expected one {instr} in stage FROM {self.image}, found {found}"
        return found[0]


def dockerfile_instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs: comments dropped, `\\` continuations joined
    (comment lines inside a continuation are skipped, as Docker does)."""
    out, pending = [], None
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("#") or (not line and pending is None):
            continue
        if not line:  # an empty line inside a continuation
            continue
        cont = line.endswith("\\")
        if cont:
            line = line[:-1].rstrip()
        pending = line if pending is None else pending + " " + line
        if not cont:
            instr, _, args = pending.partition(" ")
            out.append((instr.upper(), args.strip()))
            pending = None
    assert pending is None, "Dockerfile ends inside a line continuation"
    return out


def parse_dockerfile(text: str) -> tuple[dict[str, str], list[Stage]]:
    """Global ARG defaults and the build stages."""
    args, stages = {}, []
    for instr, rest in dockerfile_instructions(text):
        if instr == "FROM":
            words = [w for w in rest.split() if not w.startswith("--")]
            image = re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: args.get(m.group(1) or m.group(2), ""), words[0])
            alias = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            assert len(words) in (1, 3), f"bad FROM line: {rest!r}"
            stages.append(Stage(image, alias))
        elif not stages:
            assert instr == "ARG", f"{instr} before the first FROM"
            name, _, default = rest.partition("=")
            args[name] = default
        else:
            stages[-1].instructions.append((instr, rest))
    return args, stages


def exec_form(args: str) -> list[str]:
    value = json.loads(args)
    assert isinstance(value, list) and all(isinstance(x, str) for x in value), args
    return value


def env_pairs(args: str) -> dict[str, str]:
    """ENV in the `KEY=value KEY2=value2` form."""
    pairs = {}
    for word in shlex.split(args):
        key, eq, value = word.partition("=")
        assert eq, f"use ENV KEY=value, not {args!r}"
        pairs[key] = value
    return pairs


def copy_parts(args: str) -> tuple[dict[str, str], list[str], str]:
    """COPY [--flag=value ...] SRC... DEST -> (flags, sources, dest)."""
    words = args.split()
    flags = {}
    while words and words[0].startswith("--"):
        key, _, value = words.pop(0)[2:].partition("=")
        flags[key] = value
    assert len(words) >= 2, f"COPY needs a source and a destination: {args!r}"
    return flags, words[:-1], words[-1]


@pytest.fixture(scope="module")
def dockerfile():
    return parse_dockerfile(DOCKERFILE.read_text())


@pytest.fixture(scope="module")
def package_name():
    cargo = load_toml((REPO_ROOT / "Cargo.toml").read_text())
    bins = cargo.get("bin", [])
    assert not bins, "a [[bin]] section would change the binary's name"
    return cargo["package"]["name"]


def test_binary_name_is_the_package_name(package_name):
    assert package_name == BIN_NAME


def _target_run(build: Stage) -> str:
    """The RUN that picks the Rust target (it writes RUST_TARGET_FILE)."""
    found = [a for a in build.all("RUN") if f"> {RUST_TARGET_FILE}" in a]
    assert len(found) == 1, build.all("RUN")
    return found[0]


def _pick_target(script: str, tmp_path: Path, targetarch: str | None, machine: str, dpkg_arch: str):
    """Runs the target-picking RUN as the build stage would: TARGETARCH as BuildKit
    sets it (None: the classic builder, no such variable), `uname -m` and
    `dpkg --print-architecture` answering as on `machine`. Returns (rc, stderr, target)."""
    fake = tmp_path / f"bin-{targetarch}-{machine}"
    fake.mkdir()
    for name, answer in (("uname", machine), ("dpkg", dpkg_arch)):
        (fake / name).write_text(f"#!/bin/sh\necho {answer}\n")
        (fake / name).chmod(0o755)
    out = tmp_path / f"rust-target-{targetarch}-{machine}"
    env = {"PATH": f"{fake}:{os.environ.get('PATH', '/usr/bin:/bin')}"}
    if targetarch is not None:
        env["TARGETARCH"] = targetarch
    p = subprocess.run(["sh", "-c", script.replace(RUST_TARGET_FILE, str(out))], env=env,
                       capture_output=True, text=True, timeout=10)
    return p.returncode, p.stderr, out.read_text().strip() if out.exists() else None


def test_dockerfile_picks_the_rust_target_of_the_platform_asked_for(dockerfile, tmp_path):
    _, stages = dockerfile
    build = stages[0]
    assert "TARGETARCH" in build.all("ARG"), "BuildKit passes --platform's architecture only to a declared ARG"
    script = _target_run(build)
    for arch, target in MUSL_TARGETS.items():
        # The build stage runs on the platform asked for: that target, nothing on stderr.
        assert _pick_target(script, tmp_path, arch, UNAME[arch], "other") == (0, "", target), arch
        # The classic builder (no TARGETARCH) builds for the host.
        assert _pick_target(script, tmp_path, None, UNAME[arch], arch) == (0, "", target), arch
        # A stage of another CPU would compile aws-lc's C code for the wrong one: refused.
        other = next(m for a, m in UNAME.items() if a != arch)
        rc, err, written = _pick_target(script, tmp_path, arch, other, arch)
        assert rc != 0 and written is None and f"linux/{arch}" in err, (arch, rc, err)
    rc, err, written = _pick_target(script, tmp_path, "s390x", "s390x", "s390x")
    assert rc != 0 and written is None and "linux/amd64 or linux/arm64" in err, (rc, err)


def test_dockerfile_build_stage_builds_the_static_musl_binary(dockerfile, package_name):
    _, stages = dockerfile
    assert len(stages) == 2, [s.image for s in stages]
    build = stages[0]
    assert build.image.startswith("rust:"), build.image
    assert build.alias, "the build stage needs a name for COPY --from"
    runs = "\n".join(build.all("RUN"))
    assert re.search(r"apt-get install\b[^\n]*\bmusl-tools\b", runs), runs
    target = f'"$(cat {RUST_TARGET_FILE})"'
    assert f"rustup target add {target}" in runs
    env = {}
    for args in build.all("ENV"):
        env.update(env_pairs(args))
    for musl_target in MUSL_TARGETS.values():
        var = "CC_" + musl_target.replace("-", "_")
        assert env.get(var) == "musl-gcc", (var, env)
    # The RUNs that read the target come after the one that writes it.
    instrs = build.instructions
    writes = instrs.index(("RUN", _target_run(build)))
    reads = [i for i, (ins, a) in enumerate(instrs) if ins == "RUN" and RUST_TARGET_FILE in a and i != writes]
    assert reads and min(reads) > writes, (writes, reads)
    # The real build: after `COPY src`, a locked release build for the musl target,
    # checked static, and copied to OUT_BIN.
    copy_src = next(i for i, (ins, a) in enumerate(instrs) if ins == "COPY" and copy_parts(a)[1] == ["src"])
    later_runs = " ".join(a for ins, a in instrs[copy_src:] if ins == "RUN")
    assert re.search(rf"cargo build --release --locked --target {re.escape(target)}", later_runs), later_runs
    built = f'bin="target/{target[1:-1]}/release/{package_name}"'
    assert built in later_runs, later_runs
    assert "! file \"$bin\" | grep -q 'dynamically linked'" in later_runs, later_runs
    assert f'cp "$bin" {OUT_BIN}' in later_runs, later_runs
    # Cargo.toml and Cargo.lock are copied (before the sources, for layer caching).
    first_copy = copy_parts(build.all("COPY")[0])[1]
    assert set(first_copy) == {"Cargo.toml", "Cargo.lock"}, first_copy


def test_dockerfile_final_stage_is_scratch_non_root_port_2773(dockerfile, package_name):
    _, stages = dockerfile
    build, final = stages[0], stages[-1]
    assert final.image == "scratch"
    copies = [copy_parts(a) for a in final.all("COPY")]
    from_build = [(s, d) for f, s, d in copies if f.get("from") == build.alias]
    assert from_build == [([OUT_BIN], f"/{BIN_NAME}")], from_build

    user = final.one("USER")
    uid, _, gid = user.partition(":")
    assert uid.isdigit() and int(uid) != 0, f"USER must be a numeric non-root uid (scratch has no /etc/passwd): {user}"
    assert gid and gid.isdigit() and int(gid) != 0, user

    assert final.one("EXPOSE").split() == [str(PORT)]
    env = {}
    for args in final.all("ENV"):
        env.update(env_pairs(args))
    assert env["AWS_TOKEN"].startswith("file:///"), env
    assert env["AWS_TOKEN"] == "file:///var/run/awssmatoken/token"

    health = final.one("HEALTHCHECK").split(" CMD ", 1)[1]
    assert exec_form(health)[:2] == [f"/{BIN_NAME}", "ping"], health
    assert exec_form(final.one("ENTRYPOINT")) == [f"/{BIN_NAME}"]
    cmd = exec_form(final.one("CMD"))
    assert cmd[0] == "--config" and len(cmd) == 2, cmd
    config_copies = [d for f, s, d in copies if "from" not in f and s == ["examples/container-config.toml"]]
    assert config_copies == [cmd[1]], (config_copies, cmd)


# --------------------------------------------------------------------------- .dockerignore


def dockerignore_patterns() -> list[tuple[bool, str]]:
    pats = []
    for line in DOCKERIGNORE.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        neg = line.startswith("!")
        pats.append((neg, posixpath.normpath(line.lstrip("!").strip("/"))))
    return pats


def _matches(pattern: str, path: str) -> bool:
    """Docker's rule: a pattern matches a path or any of its parent directories;
    `*` and `?` do not cross `/` (no `**` in our file)."""
    assert "**" not in pattern
    pparts, parts = pattern.split("/"), path.split("/")
    if len(parts) < len(pparts):
        return False
    return all(fnmatch.fnmatchcase(p, q) for p, q in zip(parts, pparts))


def context_includes(path: str, patterns) -> bool:
    included = True
    for neg, pat in patterns:
        if _matches(pat, path):
            included = neg
    return included


def test_dockerignore_sends_what_the_build_copies_and_nothing_big(dockerfile):
    patterns = dockerignore_patterns()
    _, stages = dockerfile
    sources = []
    for stage in stages:
        for args in stage.all("COPY"):
            flags, srcs, _ = copy_parts(args)
            if "from" not in flags:
                sources += srcs
    assert sources
    for src in sources:
        assert (REPO_ROOT / src).exists(), f"COPY source {src} is not in the repository"
        assert context_includes(src, patterns), f".dockerignore excludes {src}, which the Dockerfile copies"
    for f in (REPO_ROOT / "src").rglob("*.rs"):
        rel = f.relative_to(REPO_ROOT).as_posix()
        assert context_includes(rel, patterns), rel
    for path in ("target/debug/secrets-manager-agent", ".venv/bin/python", ".git/HEAD", "logs/x.log",
                 "tests/integration/conftest.py", "examples/kubernetes-pod.yaml"):
        assert not context_includes(path, patterns), f"{path} should stay out of the build context"


# --------------------------------------------------------------------------- container config


def test_container_config_logs_to_stdout_on_port_2773():
    cfg = load_toml(CONTAINER_CONFIG.read_text())
    assert set(cfg) <= CONFIG_KEYS, set(cfg) - CONFIG_KEYS
    assert cfg["log_to_file"] is False, "a scratch image's / is not writable for a non-root user"
    assert cfg["http_port"] == PORT


def container_config_for_test() -> str:
    """The container config with an OS-chosen port and no STS call at start."""
    text = CONTAINER_CONFIG.read_text()
    text, n = re.subn(r"(?m)^http_port\s*=.*$", "http_port = 0", text)
    assert n == 1
    assert not re.search(r"(?m)^validate_credentials\s*=", text)
    return text + "\nvalidate_credentials = false\n"


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.toml")), ids=lambda p: p.name)
def test_every_example_config_is_accepted_by_the_agent(agent, path):
    """Each examples/*.toml passes the agent's config checks. Without a token the
    start stops at the next step, which names the token variables: reaching it
    means the file was accepted (a refused file exits naming a config key)."""
    rc, out, err = agent.run_expect_exit("http://127.0.0.1:9", env={"AWS_TOKEN": None}, args=["--config", str(path)])
    assert rc == 1, (rc, out, err)
    assert "no SSRF token found" in err, err
    assert "config" not in err.lower(), err


def test_3x_example_uses_the_nested_layout():
    cfg = load_toml((EXAMPLES / "agent-3x-config.toml").read_text())
    assert set(cfg) == {"logging", "capabilities"}, set(cfg)
    sm = cfg["capabilities"]["secrets_manager"]
    assert sm["http_port"] == PORT and sm["enabled"] is True
    assert set(sm["cache"]) == {"ttl_seconds", "cache_size"}
    assert set(sm["security"]) == {"ssrf_headers", "ssrf_env_variables"}


# --------------------------------------------------------------------------- ECS

TASK_KEYS = {
    "family", "taskRoleArn", "executionRoleArn", "networkMode", "containerDefinitions", "volumes",
    "placementConstraints", "requiresCompatibilities", "cpu", "memory", "tags", "pidMode", "ipcMode",
    "proxyConfiguration", "inferenceAccelerators", "ephemeralStorage", "runtimePlatform",
    "enableFaultInjection",
}
CONTAINER_KEYS = {
    "name", "image", "repositoryCredentials", "cpu", "memory", "memoryReservation", "links",
    "portMappings", "essential", "restartPolicy", "entryPoint", "command", "environment",
    "environmentFiles", "mountPoints", "volumesFrom", "linuxParameters", "secrets", "dependsOn",
    "startTimeout", "stopTimeout", "versionConsistency", "hostname", "user", "workingDirectory",
    "disableNetworking", "privileged", "readonlyRootFilesystem", "dnsServers", "dnsSearchDomains",
    "extraHosts", "dockerSecurityOptions", "interactive", "pseudoTerminal", "dockerLabels", "ulimits",
    "logConfiguration", "healthCheck", "systemControls", "resourceRequirements",
    "firelensConfiguration", "credentialSpecs",
}


@pytest.fixture(scope="module")
def ecs():
    return json.loads(ECS_TASK.read_text())


def _by_name(containers, name):
    found = [c for c in containers if c["name"] == name]
    assert len(found) == 1, (name, [c["name"] for c in containers])
    return found[0]


def _ecs_env(c) -> dict[str, str]:
    return {e["name"]: e["value"] for e in c.get("environment", [])}


def _agent_image(image: str) -> bool:
    repo = image.rsplit(":", 1)[0] if ":" in image.rsplit("/", 1)[-1] else image
    return repo.rsplit("/", 1)[-1] == BIN_NAME


def test_ecs_task_definition_is_a_registerable_awsvpc_task(ecs):
    assert set(ecs) <= TASK_KEYS, set(ecs) - TASK_KEYS
    for c in ecs["containerDefinitions"]:
        assert set(c) <= CONTAINER_KEYS, (c["name"], set(c) - CONTAINER_KEYS)
    assert ecs["networkMode"] == "awsvpc", "the sidecar pattern needs one network namespace per task"
    assert "FARGATE" in ecs["requiresCompatibilities"]
    # The example's platform (the Dockerfile builds linux/arm64 too, for ARM64).
    assert ecs["runtimePlatform"]["cpuArchitecture"] == "X86_64"
    assert ecs["taskRoleArn"].startswith("arn:aws:iam::")
    names = [c["name"] for c in ecs["containerDefinitions"]]
    assert len(names) == len(set(names))


def test_ecs_agent_is_a_sidecar_sharing_the_token_with_the_app(ecs):
    containers = ecs["containerDefinitions"]
    agents = [c for c in containers if _agent_image(c["image"])]
    assert len(agents) == 1, [c["image"] for c in containers]
    agent = agents[0]
    assert agent["essential"] is True
    assert agent.get("readonlyRootFilesystem") is True
    uid = agent.get("user", "65532").split(":")[0]
    assert uid.isdigit() and int(uid) != 0
    assert "portMappings" not in agent, "the agent listens on loopback only; nothing to map"
    check = agent["healthCheck"]["command"]
    assert check[:3] == ["CMD", f"/{BIN_NAME}", "ping"], "exec form: the scratch image has no shell"
    assert agent["linuxParameters"]["capabilities"]["drop"] == ["ALL"]
    assert agent["linuxParameters"].get("initProcessEnabled") is True, "init reaps zombies in the sidecar"

    token_url = _ecs_env(agent)["AWS_TOKEN"]
    assert token_url.startswith("file:///")
    token_path = token_url[len("file://"):]
    token_dir = posixpath.dirname(token_path)
    volumes = {v["name"]: v for v in ecs.get("volumes", [])}

    def mount(c):
        ms = [m for m in c.get("mountPoints", []) if m["containerPath"] == token_dir]
        assert len(ms) == 1, (c["name"], c.get("mountPoints"))
        assert ms[0]["sourceVolume"] in volumes
        assert "host" not in volumes[ms[0]["sourceVolume"]], "Fargate: task storage, no host path"
        return ms[0]

    agent_mount = mount(agent)
    assert agent_mount.get("readOnly") is True

    # The init container writes the token file; the agent waits for it to finish.
    deps = {d["containerName"]: d["condition"] for d in agent.get("dependsOn", [])}
    init_names = [n for n, cond in deps.items() if cond == "SUCCESS"]
    assert len(init_names) == 1, deps
    init = _by_name(containers, init_names[0])
    assert init["essential"] is False
    assert mount(init)["sourceVolume"] == agent_mount["sourceVolume"]
    assert not mount(init).get("readOnly")
    assert token_path in " ".join(init["command"])

    # The application: same token variable and volume, starts after both.
    apps = [c for c in containers if c is not agent and c is not init]
    assert len(apps) == 1
    app = apps[0]
    assert app["essential"] is True
    assert _ecs_env(app)["AWS_TOKEN"] == token_url
    assert mount(app)["sourceVolume"] == agent_mount["sourceVolume"]
    app_deps = {d["containerName"]: d["condition"] for d in app.get("dependsOn", [])}
    assert app_deps.get(agent["name"]) == "START", app_deps
    assert app_deps.get(init["name"]) == "SUCCESS", app_deps
    assert f"127.0.0.1:{PORT}" in json.dumps(app) or f"localhost:{PORT}" in json.dumps(app)


# --------------------------------------------------------------------------- Kubernetes


@pytest.fixture(scope="module")
def k8s_docs():
    docs = [d for d in yaml.safe_load_all(K8S_POD.read_text()) if d is not None]
    return {d["kind"]: d for d in docs}


def _k8s_env(c) -> dict[str, str]:
    return {e["name"]: e["value"] for e in c.get("env", [])}


def _k8s_mount(c, volume, path):
    ms = [m for m in c.get("volumeMounts", []) if m["name"] == volume]
    assert len(ms) == 1 and ms[0]["mountPath"] == path, (c["name"], c.get("volumeMounts"))
    return ms[0]


def test_k8s_service_account_uses_irsa_and_notes_pod_identity(k8s_docs):
    assert set(k8s_docs) == {"ServiceAccount", "Pod"}, list(k8s_docs)
    sa, pod = k8s_docs["ServiceAccount"], k8s_docs["Pod"]
    assert sa["apiVersion"] == "v1" and pod["apiVersion"] == "v1"
    role = sa["metadata"]["annotations"]["eks.amazonaws.com/role-arn"]
    assert role.startswith("arn:aws:iam::"), role
    assert pod["spec"]["serviceAccountName"] == sa["metadata"]["name"]
    assert "Pod Identity" in K8S_POD.read_text()
    assert "create-pod-identity-association" in K8S_POD.read_text()


def test_k8s_agent_is_a_hardened_sidecar_sharing_the_token_with_the_app(k8s_docs, dockerfile):
    spec = k8s_docs["Pod"]["spec"]
    inits, mains = spec.get("initContainers", []), spec["containers"]
    everything = inits + mains
    names = [c["name"] for c in everything]
    assert len(names) == len(set(names))
    agents = [c for c in everything if _agent_image(c["image"])]
    assert len(agents) == 1, [c["image"] for c in everything]
    agent = agents[0]
    if agent in inits:
        assert agent.get("restartPolicy") == "Always", "an init container as sidecar needs restartPolicy: Always"
    assert not any(p.get("containerPort") == PORT for p in agent.get("ports", [])), "loopback only"
    # Probes run the agent's own client: an httpGet probe would go to the pod IP.
    live, ready = agent["livenessProbe"]["exec"]["command"], agent["readinessProbe"]["exec"]["command"]
    assert live[:2] == [f"/{BIN_NAME}", "ping"] and "--ready" not in live, live
    assert ready[:2] == [f"/{BIN_NAME}", "ping"] and "--ready" in ready, ready
    assert "httpGet" not in agent["livenessProbe"] and "startupProbe" not in agent

    pod_sc = spec.get("securityContext", {})
    assert pod_sc.get("runAsNonRoot") is True
    for c in everything:
        sc = c.get("securityContext", {})
        assert sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot")) is True, c["name"]
        assert sc.get("readOnlyRootFilesystem") is True, c["name"]
        assert sc.get("allowPrivilegeEscalation") is False, c["name"]
        assert sc.get("capabilities", {}).get("drop") == ["ALL"], c["name"]
    # The agent runs as the image's USER.
    user = dockerfile[1][-1].one("USER")
    uid, gid = (int(x) for x in user.split(":"))
    asc = agent.get("securityContext", {})
    assert asc.get("runAsUser", pod_sc.get("runAsUser")) == uid
    assert asc.get("runAsGroup", pod_sc.get("runAsGroup")) == gid

    token_url = _k8s_env(agent)["AWS_TOKEN"]
    assert token_url.startswith("file:///")
    token_path = token_url[len("file://"):]
    token_dir = posixpath.dirname(token_path)

    volumes = {v["name"]: v for v in spec["volumes"]}
    vol = next(m["name"] for m in agent["volumeMounts"] if m["mountPath"] == token_dir)
    assert volumes[vol]["emptyDir"]["medium"] == "Memory"
    assert _k8s_mount(agent, vol, token_dir).get("readOnly") is True

    # An init container before the agent writes the token file into the volume.
    writers = [c for c in inits if c is not agent and vol in {m["name"] for m in c.get("volumeMounts", [])}]
    assert len(writers) == 1
    writer = writers[0]
    assert inits.index(writer) < (inits.index(agent) if agent in inits else len(inits))
    assert writer.get("restartPolicy") is None, "the token writer runs to completion"
    assert not _k8s_mount(writer, vol, token_dir).get("readOnly")
    assert token_path in " ".join(writer["command"] + writer.get("args", []))

    # The app: same variable and volume, calls the agent on port 2773.
    apps = [c for c in mains if c is not agent]
    assert len(apps) == 1
    app = apps[0]
    assert _k8s_env(app)["AWS_TOKEN"] == token_url
    assert _k8s_mount(app, vol, token_dir).get("readOnly") is True
    script = json.dumps(app)
    assert re.search(rf"(127\.0\.0\.1|localhost):{PORT}\b", script), script
    assert "X-Aws-Parameters-Secrets-Token" in script
    # The app runs as another user and reads the 0440 token file through fsGroup.
    if app.get("securityContext", {}).get("runAsUser", uid) != uid:
        assert pod_sc.get("fsGroup") == gid


# --------------------------------------------------------------------------- running the pieces


def _run_bounded(argv, timeout=10, **kw):
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True, **kw)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate(timeout=5)
        raise
    return proc.returncode, out.decode(), err.decode()


def _init_scripts(ecs, k8s_docs):
    """(label, shell script, expected mode) of the token writers in both examples."""
    ecs_init = next(c for c in ecs["containerDefinitions"] if c.get("essential") is False)
    assert ecs_init["command"][:2] == ["sh", "-c"]
    k8s_init = k8s_docs["Pod"]["spec"]["initContainers"][0]
    cmd = k8s_init["command"] + k8s_init.get("args", [])
    assert cmd[:2] == ["sh", "-c"]
    return [("ecs", ecs_init["command"][2], 0o444), ("k8s", cmd[2], 0o440)]


def write_token(script: str, token_dir: Path) -> str:
    rc, out, err = _run_bounded(["sh", "-c", script.replace("/var/run/awssmatoken", str(token_dir))],
                                env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")})
    assert rc == 0, (rc, out, err)
    return (token_dir / "token").read_text()


def test_init_containers_write_a_fresh_random_token(tmp_path, ecs, k8s_docs):
    for label, script, mode in _init_scripts(ecs, k8s_docs):
        assert "/var/run/awssmatoken" in script
        d = tmp_path / label
        d.mkdir()
        first = write_token(script, d)
        assert TOKEN_RE.fullmatch(first), first
        assert stat.S_IMODE((d / "token").stat().st_mode) == mode, label
        assert sorted(p.name for p in d.iterdir()) == ["token"]
        # A re-run (task or pod sandbox restart) replaces the read-only file whole.
        second = write_token(script, d)
        assert TOKEN_RE.fullmatch(second) and second != first


def test_container_config_and_token_file_start_the_agent(agent, tmp_path, ecs, k8s_docs):
    """The image's config and AWS_TOKEN=file:// as the examples set them up."""
    token = write_token(_init_scripts(ecs, k8s_docs)[1][1], tmp_path)
    ag = agent(
        "http://127.0.0.1:9",
        raw_config=container_config_for_test(),
        token=token,
        env={"AWS_TOKEN": f"file://{tmp_path}/token", "AWS_REGION": "us-east-1"},
    )
    status, _, body = ag.get("/ping", token=False)
    assert (status, body) == (200, b"healthy")
    # The token from the file is accepted (the request fails later, on the missing ID).
    status, _, body = ag.get("/secretsmanager/get")
    assert (status, body) == (400, b"missing parameter secretId")
    status, _, body = ag.get("/secretsmanager/get", token=False, headers={"X-Aws-Parameters-Secrets-Token": "x" * 64})
    assert (status, body) == (403, b"Bad Token")
    assert not (Path(ag.workdir) / "logs").exists(), "log_to_file = false must not create ./logs"

    # The health checks of the examples, run as the image would run them: the
    # binary and the config file at their places in this test.
    config = Path(ag.workdir) / "probe-config.toml"
    config.write_text(container_config_for_test().replace("http_port = 0", f"http_port = {ag.port}"))
    pod = k8s_docs["Pod"]["spec"]
    sidecar = next(c for c in pod.get("initContainers", []) + pod["containers"] if _agent_image(c["image"]))
    ecs_agent = next(c for c in ecs["containerDefinitions"] if _agent_image(c["image"]))
    checks = {
        "k8s liveness": sidecar["livenessProbe"]["exec"]["command"],
        "k8s readiness": sidecar["readinessProbe"]["exec"]["command"],
        "ecs": ecs_agent["healthCheck"]["command"][1:],
        "dockerfile": exec_form(parse_dockerfile(DOCKERFILE.read_text())[1][-1].one("HEALTHCHECK").split(" CMD ", 1)[1]),
    }
    for label, argv in checks.items():
        argv = [str(agent_bin()) if a == f"/{BIN_NAME}" else str(config) if a.endswith("config.toml") else a
                for a in argv]
        p = subprocess.run(argv, capture_output=True, timeout=30,
                           env={"PATH": os.environ.get("PATH", ""), "AWS_EC2_METADATA_DISABLED": "true"})
        expected = b"ready\n" if label == "k8s readiness" else b"healthy\n"
        assert (p.returncode, p.stdout) == (0, expected), (label, p)


def test_k8s_app_script_fetches_a_secret_through_the_agent(agent, fake_upstream, tmp_path, ecs, k8s_docs):
    wget = shutil.which("wget")
    if not wget:
        pytest.skip("wget not installed (the example app uses busybox wget)")
    token = write_token(_init_scripts(ecs, k8s_docs)[1][1], tmp_path)
    token_url = f"file://{tmp_path}/token"
    ag = agent(
        fake_upstream.url,
        raw_config=container_config_for_test(),
        token=token,
        env={"AWS_TOKEN": token_url, "AWS_REGION": "us-east-1"},
    )
    app = next(c for c in k8s_docs["Pod"]["spec"]["containers"] if not _agent_image(c["image"]))
    argv = app["command"] + app.get("args", [])
    assert argv[:2] == ["sh", "-c"]
    env = {**_k8s_env(app), "AWS_TOKEN": token_url, "PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    env["SECRETS_MANAGER_AGENT_URL"] = f"http://127.0.0.1:{ag.port}"
    secret_id = env["SECRET_ID"]
    out_path = tmp_path / "app.out"
    with open(out_path, "wb") as out:
        proc = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline and "fetch" not in out_path.read_text():
                if proc.poll() is not None:
                    break
                time.sleep(0.05)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)
    text = out_path.read_text()
    assert f"fetched {secret_id}" in text, text
    assert token not in text and f"value-of-{secret_id}" not in text, "the example must not log secrets"
    assert ("GetSecretValue", secret_id) in [(c[0], c[1]) for c in fake_upstream.calls]
