"""The static binary's code layout (README, "Memory").

`link/hot-text.ld` lists the code the agent runs (start-up, requests, fetches,
refreshes), and build.rs links the x86_64 static binary with it, so that code
is one block at the front of `.text` instead of being spread over the whole of
it. The script names sections by symbol; when the code changes enough that its
names no longer match, the block shrinks silently and RSS grows back by up to
a MiB. This fails first: run `make hot-text`.

A missing static binary FAILS these tests (run `make static`) unless
``SKIP_STATIC_TESTS=1``; ``STATIC_AGENT_BIN`` points them at another build.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from conftest import REPO_ROOT, static_binary

SCRIPT = REPO_ROOT / "link" / "hot-text.ld"


def section_sizes(binary: Path) -> dict[str, int]:
    out = subprocess.run(["readelf", "-SW", str(binary)], capture_output=True, text=True, timeout=30,
                         check=True).stdout
    sizes = {}
    for line in out.splitlines():
        m = re.match(r"\s*\[\s*\d+\]\s+(\S+)\s+\S+\s+[0-9a-f]+\s+[0-9a-f]+\s+([0-9a-f]+)\s", line)
        if m:
            sizes[m.group(1)] = int(m.group(2), 16)
    return sizes


def listed_bytes() -> int:
    m = re.search(r"(\d+) sections, (\d+) bytes", SCRIPT.read_text())
    assert m, f"{SCRIPT} has no 'N sections, B bytes' header: rewrite it with `make hot-text`"
    return int(m.group(2))


def test_the_script_lists_the_code_the_agent_runs():
    text = SCRIPT.read_text()
    assert "INSERT BEFORE .text;" in text, "without INSERT the script would replace the linker's default one"
    # Start-up, the request path and the fetch path: a script that lost any of
    # them would leave their code spread out again.
    for needle in ("secrets_manager_agent4main", "server4conn5serve", "cache5table", "aws9transport",
                   "aws_sigv4", "libc.a:memcpy.lo"):
        assert needle in text, f"{needle} is missing from {SCRIPT.name}: rewrite it with `make hot-text`"
    assert listed_bytes() > 256 * 1024


def test_the_static_binary_puts_the_listed_code_first():
    sizes = section_sizes(static_binary())
    assert ".text.agent_hot" in sizes, (
        "the static binary has no .text.agent_hot section: build.rs did not link it with link/hot-text.ld")
    found, listed = sizes[".text.agent_hot"], listed_bytes()
    # The block holds what the script's patterns still match. Code changes
    # move a little in or out; a toolchain or dependency update that renames
    # symbols empties it.
    assert found >= 0.85 * listed, (
        f"the script's patterns matched {found} of the {listed} bytes it was written for: "
        "the code has changed under it; rewrite it with `make hot-text`")
    assert found < sizes[".text"], "the block should be the small part of the code"
