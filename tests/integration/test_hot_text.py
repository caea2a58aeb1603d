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
matches, and the tests that compare it with the script skip (in CI, with
CI set, they fail: the layout has to be written again).

A missing static binary FAILS these tests (run `make static`) unless
``SKIP_STATIC_TESTS=1``; ``STATIC_AGENT_BIN`` points them at another build.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from conftest import REPO_ROOT, static_binary, unique

SCRIPT = REPO_ROOT / "link" / "hot-text.ld"
DOCKERFILE = REPO_ROOT / "Dockerfile"
BLOCK = 64 * 1024  # what Linux maps around a touched page of code (fault-around)


def readelf(binary: Path, *flags) -> str:
    return subprocess.run(["readelf", *flags, str(binary)], capture_output=True, text=True, timeout=30,
                          check=True).stdout


def sections(binary: Path) -> dict[str, tuple[int, int]]:
    """name -> (address, size)"""
    found = {}
    for line in readelf(binary, "-SW").splitlines():
        m = re.match(r"\s*\[\s*\d+\]\s+(\S+)\s+\S+\s+([0-9a-f]+)\s+[0-9a-f]+\s+([0-9a-f]+)\s", line)
        if m:
            found[m.group(1)] = (int(m.group(2), 16), int(m.group(3), 16))
    return found


def script_header() -> tuple[str, int]:
    """(the rustc that wrote the script, the bytes of code it gathered)."""
    m = re.search(r"with (rustc .+?): the code.*?(\d+) bytes", SCRIPT.read_text(), re.S)
    assert m, f"{SCRIPT} has no 'with rustc ...: ... B bytes' header: rewrite it with `make hot-text`"
    return m.group(1), int(m.group(2))


def built_by(binary: Path) -> str:
    # rustc records itself in .comment as "rustc version 1.95.0 (hash date)".
    m = re.search(r"rustc version (.+)$", readelf(binary, "-p", ".comment"), re.M)
    return "rustc " + m.group(1).strip() if m else "an unknown rustc"


def laid_out_binary() -> Path:
    """The static binary, if the script can apply to it in full; skips (fails
    in CI) when another rustc built it, skips for a build without aws-lc."""
    binary = static_binary()
    if b"aws-lc-rs" not in binary.read_bytes():
        pytest.skip("not the default (aws-lc) build: the script lists aws-lc's code")
    rustc, built = script_header()[0], built_by(binary)
    if built != rustc:
        message = (f"{SCRIPT.name} was written with {rustc}, the binary built with {built}: "
                   "its Rust symbols differ, and only part of the layout applies; run `make hot-text`")
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return binary


def present_pages(pid: int, binary: Path) -> tuple[int, list[int]]:
    """(load address, link addresses of the code pages in memory)."""
    base, pages = None, []
    with open(f"/proc/{pid}/maps") as maps, open(f"/proc/{pid}/pagemap", "rb") as pagemap:
        for line in maps:
            parts = line.split(None, 5)
            if len(parts) < 6 or Path(parts[5].strip()) != binary:
                continue
            lo, hi = (int(x, 16) for x in parts[0].split("-"))
            if base is None:
                base = lo - int(parts[2], 16)
            if parts[1] != "r-xp":
                continue
            pagemap.seek(lo // 4096 * 8)
            entries = pagemap.read((hi - lo) // 4096 * 8)
            for i in range((hi - lo) // 4096):
                if int.from_bytes(entries[i * 8:i * 8 + 8], "little") >> 63:
                    pages.append(lo + i * 4096 - base)
    assert base is not None, f"{binary} is not mapped in process {pid}"
    return base, pages


def test_the_script_lists_the_code_the_agent_runs():
    text = SCRIPT.read_text()
    assert "INSERT BEFORE .text;" in text, "without INSERT the script would replace the linker's default one"
    # Start-up, the request path, the fetch path and TLS: a script that lost
    # any of them would leave their code spread out again.
    for needle in ("secrets_manager_agent4main", "server4conn5serve", "cache5table", "aws9transport",
                   "aws_sigv4", "rustls", "libc.a:memcpy.lo"):
        assert needle in text, f"{needle} is missing from {SCRIPT.name}: rewrite it with `make hot-text`"
    assert script_header()[1] > 256 * 1024


def test_the_dockerfile_builds_with_the_rustc_that_wrote_the_script():
    version = re.match(r"rustc (\S+)", script_header()[0]).group(1)
    pinned = re.search(r"^ARG RUST_VERSION=(\S+)$", DOCKERFILE.read_text(), re.M)
    assert pinned and pinned.group(1) == version, (
        f"the Dockerfile's RUST_VERSION should be {version}, the rustc {SCRIPT.name} was written with")


def test_the_static_binary_gathers_what_the_script_lists():
    binary = static_binary()
    assert ".text.agent_hot" in sections(binary), (
        "the static binary has no .text.agent_hot section: build.rs did not link it with link/hot-text.ld")
    binary = laid_out_binary()
    found, listed = sections(binary)[".text.agent_hot"][1], script_header()[1]
    # Code changes move a little in or out; renamed symbols drop out.
    assert found >= 0.85 * listed, (
        f"the script's patterns gathered {found} of the {listed} bytes it was written for: "
        "the code has changed under it; rewrite it with `make hot-text`")


def test_misses_and_hits_run_code_from_the_block_only(agent, fake_upstream, monkeypatch):
    binary = laid_out_binary()
    block = sections(binary).get(".text.agent_hot")
    assert block, "the static binary has no .text.agent_hot section"
    start, size = block
    # The blocks the kernel maps around the block's own pages.
    around = (start // BLOCK * BLOCK, (start + size + BLOCK - 1) // BLOCK * BLOCK)
    monkeypatch.setenv("AGENT_BIN", str(binary))
    a = agent(upstream=fake_upstream.url)
    ids = [unique("hot") for _ in range(20)]
    for secret_id in ids + ids * 5:
        status, _, body = a.secret(secret_id)
        assert status == 200, body
    _, pages = present_pages(a.proc.pid, binary.resolve())
    outside = sorted({page // BLOCK * BLOCK for page in pages if not around[0] <= page < around[1]})
    # One stray block is a function or two that joined these paths since the
    # script was written; more is the layout losing its effect (without it,
    # 1.6 MiB of code, 26 of the binary's 37 blocks, are mapped here).
    assert len(outside) <= 1, (
        f"after 20 misses and 100 hits, code is mapped in {len(outside)} blocks of 64 KiB outside the one "
        f"link/hot-text.ld gathers (at {', '.join(hex(b) for b in outside)}): code on these paths lies outside "
        "it; rewrite it with `make hot-text`")
