"""The static binary's code layout (README, "Memory").

`link/hot-text.ld` lists the code the agent runs (start-up, requests, fetches
over HTTP and HTTPS, refreshes), and build.rs links the x86_64 static binary
with it, so that this code is one block instead of being spread over all of
`.text`: Linux maps code 64 KiB around each page touched, and the spread-out
layout kept 1.6 MiB of code mapped instead of 0.6 MiB.

The script names sections by symbol. When the code changes enough that the
names no longer match, or new code on the agent's paths lies outside the
block, the mapped code grows back; these tests say so (run `make hot-text`).
Rust symbols also carry hashes of the toolchain: a binary built with another
rustc than the one that wrote the script only gets the part that still
matches, and the tests that compare it with the script skip.

A missing static binary FAILS these tests (run `make static`) unless
``SKIP_STATIC_TESTS=1``; ``STATIC_AGENT_BIN`` points them at another build.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from conftest import REPO_ROOT, static_binary, unique

SCRIPT = REPO_ROOT / "link" / "hot-text.ld"
# Without the layout 1,644 KiB of code is mapped after start-up; with it 572
# KiB idle and 636-700 KiB after misses and hits (smaps, this project's build
# machine). Halfway: a layout that has lost much of its effect fails.
MOST_CODE_MAPPED_KIB = 1024


def readelf(binary: Path, *flags) -> str:
    return subprocess.run(["readelf", *flags, str(binary)], capture_output=True, text=True, timeout=30,
                          check=True).stdout


def section_sizes(binary: Path) -> dict[str, int]:
    sizes = {}
    for line in readelf(binary, "-SW").splitlines():
        m = re.match(r"\s*\[\s*\d+\]\s+(\S+)\s+\S+\s+[0-9a-f]+\s+[0-9a-f]+\s+([0-9a-f]+)\s", line)
        if m:
            sizes[m.group(1)] = int(m.group(2), 16)
    return sizes


def script_header() -> tuple[str, int]:
    """(the rustc that wrote the script, the bytes of code it gathered)."""
    m = re.search(r"with (rustc [^:]+?): .*?(\d+) bytes", SCRIPT.read_text(), re.S)
    assert m, f"{SCRIPT} has no 'with rustc ...: ... B bytes' header: rewrite it with `make hot-text`"
    return m.group(1), int(m.group(2))


def same_rustc(binary: Path) -> bool:
    rustc, _ = script_header()
    # rustc records itself in .comment as "rustc version 1.95.0 (hash date)".
    built = re.search(r"rustc version (\S+ \([^)]*\))", readelf(binary, "-p", ".comment"))
    return bool(built) and rustc == "rustc " + built.group(1)


def code_mapped_kib(pid: int, binary: Path) -> int:
    """RSS of the binary's executable mapping."""
    total, ours = 0, False
    for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
        if re.match(r"^[0-9a-f]+-[0-9a-f]+ ", line):
            parts = line.split(None, 5)
            ours = parts[1] == "r-xp" and len(parts) == 6 and Path(parts[5]) == binary
        elif ours and line.startswith("Rss:"):
            total += int(line.split()[1])
    return total


def test_the_script_lists_the_code_the_agent_runs():
    text = SCRIPT.read_text()
    assert "INSERT BEFORE .text;" in text, "without INSERT the script would replace the linker's default one"
    # Start-up, the request path, the fetch path and TLS: a script that lost
    # any of them would leave their code spread out again.
    for needle in ("secrets_manager_agent4main", "server4conn5serve", "cache5table", "aws9transport",
                   "aws_sigv4", "rustls", "libc.a:memcpy.lo"):
        assert needle in text, f"{needle} is missing from {SCRIPT.name}: rewrite it with `make hot-text`"
    assert script_header()[1] > 256 * 1024


def test_the_static_binary_gathers_what_the_script_lists():
    binary = static_binary()
    sizes = section_sizes(binary)
    assert ".text.agent_hot" in sizes, (
        "the static binary has no .text.agent_hot section: build.rs did not link it with link/hot-text.ld")
    if not same_rustc(binary):
        pytest.skip(f"{SCRIPT.name} was written with {script_header()[0]}, the binary built with another rustc")
    found, listed = sizes[".text.agent_hot"], script_header()[1]
    # Code changes move a little in or out; renamed symbols drop out.
    assert found >= 0.85 * listed, (
        f"the script's patterns gathered {found} of the {listed} bytes it was written for: "
        "the code has changed under it; rewrite it with `make hot-text`")


def test_misses_and_hits_map_little_of_the_code(agent, fake_upstream, monkeypatch):
    binary = static_binary()
    if not same_rustc(binary):
        pytest.skip(f"{SCRIPT.name} was written with {script_header()[0]}, the binary built with another rustc")
    monkeypatch.setenv("AGENT_BIN", str(binary))
    a = agent(upstream=fake_upstream.url)
    ids = [unique("hot") for _ in range(20)]
    for secret_id in ids + ids * 5:
        status, _, body = a.secret(secret_id)
        assert status == 200, body
    mapped = code_mapped_kib(a.proc.pid, binary.resolve())
    assert 0 < mapped <= MOST_CODE_MAPPED_KIB, (
        f"{mapped} KiB of the binary's code is mapped after 20 misses and 100 hits: code on these paths lies "
        f"outside the block link/hot-text.ld gathers; rewrite it with `make hot-text`")
