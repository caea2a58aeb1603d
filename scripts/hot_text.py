"""Writes link/hot-text.ld, the order of the static binary's code: what the
agent runs first, everything else after (README, "Memory").

Why: the kernel maps a program's code 64 KiB at a time around each page it
touches. Laid out as the compiler emits it, the ~600 KiB that start-up,
serving and fetching run were spread over 27 of the binary's 37 such blocks,
so 1.6 MiB of code stayed mapped: three quarters of the agent's RSS at rest.

How (`make hot-text`; needs valgrind, and perf for the last step):
1. links the static binary with a linker map (build.rs, HOT_TEXT_MAP);
2. runs it under callgrind through the scenarios below, which record every
   instruction address it executes, and finds each one's input section in the
   map;
3. writes the script, relinks, and runs the same scenarios at full speed
   under `perf record -e page-faults`: code that faults outside the block ran
   on a path callgrind's slower schedule did not take; its sections are added
   and the loop repeats (at most --rounds times).

The script names sections with the hash of a Rust symbol replaced by `*`
where that still names one section, so that it keeps matching after most
changes to the code; tests/integration/test_hot_text.py fails when the block
it gathers falls well short of what it was written for.
"""

import argparse
import bisect
import fnmatch
import http.client
import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(REPO, "bench"))
import bench  # noqa: E402
import common  # noqa: E402

SCRIPT = os.path.join(REPO, "link", "hot-text.ld")
BINARY = os.path.join(REPO, "target", "x86_64-unknown-linux-musl", "release", "secrets-manager-agent")
OUTPUT_SECTION = ".text.agent_hot"
LEGACY_HASH = re.compile(r"17h[0-9a-f]{16}E$")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=4, help="perf rounds after the callgrind run")
    args = p.parse_args()
    for tool in ("valgrind", "readelf"):
        if not shutil.which(tool):
            sys.exit("%s not found (apt-get install valgrind binutils)" % tool)
    work = tempfile.mkdtemp(prefix="hot-text-")
    map_path = os.path.join(work, "agent.map")

    sections = link(map_path)
    hot, lost = set(), 0
    for addr in callgrind_addresses(work):
        found = sections.find(addr)
        if found:
            hot.add(found)
        else:
            lost += 1
    if lost > len(hot):
        sys.exit("callgrind: %d of the addresses are in no code section of the map" % lost)
    print("callgrind: %d sections, %d KiB" % (len(hot), sum(s.size for s in hot) // 1024), flush=True)
    write_script(hot, sections)

    for round_ in range(args.rounds):
        sections = link(map_path)
        if not shutil.which("perf"):
            print("perf not found: no check at full speed (apt-get install linux-perf)")
            break
        block = sections.output_range(OUTPUT_SECTION)
        outside = {sections.find(a) for a in fault_addresses(work) if not block[0] <= a < block[1]}
        outside.discard(None)
        outside -= hot
        print("round %d: block %d KiB, %d sections faulted outside it" %
              (round_ + 1, (block[1] - block[0]) // 1024, len(outside)), flush=True)
        for s in sorted(outside, key=lambda s: s.addr):
            print("    %s (%s)" % (s.name[:100], os.path.basename(s.file)[:40]))
        if not outside:
            break
        hot |= outside
        write_script(hot, sections)
    shutil.rmtree(work, ignore_errors=True)
    print("wrote %s" % os.path.relpath(SCRIPT, REPO))


class Section:
    """One input section where one link placed it; the same section in
    another link (another address) compares equal."""
    __slots__ = ("name", "addr", "size", "file")

    def __init__(self, name, addr, size, file):
        self.name, self.addr, self.size, self.file = name, addr, size, file

    def __eq__(self, other):
        return (self.name, self.file) == (other.name, other.file)

    def __hash__(self):
        return hash((self.name, self.file))


class Sections:
    """The code sections of a linker map (GNU ld's `-Map`), by address."""

    def __init__(self, path):
        self.items, self.outputs = [], {}
        # A name too long for its column is alone on its line, and its
        # address and size are on the next.
        entry = re.compile(r"^( ?)(\.text\S*)(?:\s+0x([0-9a-f]+)\s+0x([0-9a-f]+)\s*(.*))?$")
        address = re.compile(r"^\s+0x([0-9a-f]+)\s+0x([0-9a-f]+)\s*(.*)$")
        pending, placed = None, False
        with open(path) as f:
            for line in f:
                line = line.rstrip("\n")
                # Before this line the map lists the sections the linker
                # discarded, all at address 0.
                placed = placed or line.startswith("Linker script and memory map")
                m = entry.match(line) if placed else None
                if m and m.group(3) is None:
                    pending = (m.group(1), m.group(2))
                    continue
                if m:
                    indent, name, addr, size, file = m.groups()
                elif pending and address.match(line):
                    (indent, name), (addr, size, file) = pending, address.match(line).groups()
                else:
                    pending = None
                    continue
                pending = None
                addr, size = int(addr, 16), int(size, 16)
                if not indent:
                    self.outputs[name] = (addr, addr + size)
                elif size:
                    self.items.append(Section(name, addr, size, file.strip()))
        self.items.sort(key=lambda s: s.addr)
        self.starts = [s.addr for s in self.items]
        self.names = {}
        for s in self.items:
            self.names.setdefault(s.name, []).append(s)

    def find(self, addr):
        i = bisect.bisect_right(self.starts, addr) - 1
        if i >= 0 and addr < self.items[i].addr + self.items[i].size:
            return self.items[i]
        return None

    def output_range(self, name):
        return self.outputs.get(name, (0, 0))


def link(map_path):
    """`make static` with a linker map; returns the map's sections."""
    env = dict(os.environ, HOT_TEXT_MAP=map_path)
    subprocess.run(["make", "--no-print-directory", "-C", REPO, "static"], env=env, check=True,
                   stdout=subprocess.DEVNULL)
    return Sections(map_path)


def pattern(section, sections):
    """The script's line for one input section."""
    archive = re.match(r"^(?:.*/)?([^/()]+\.a)\(([^()]+)\)$", section.file)
    if section.name == ".text" or not section.name.startswith(".text."):
        # A C object without function sections (musl's libc.a, start files):
        # the object's code as a whole.
        where = "*%s:%s" % archive.groups() if archive else "*" + os.path.basename(section.file)
        return "%s(%s)" % (where, section.name)
    name = section.name
    globbed = LEGACY_HASH.sub("17h*E", name)
    if globbed != name:
        # The glob is kept only if it names this section alone, as ld would
        # match it (another instance of a generic has the same path).
        prefix = globbed[:-len("17h*E")]
        rivals = [n for n in sections.names if n.startswith(prefix) and fnmatch.fnmatchcase(n, globbed)]
        if rivals == [name]:
            name = globbed
    return "*(%s)" % name


def write_script(hot, sections):
    lines = sorted({pattern(s, sections) for s in hot})
    total = sum(s.size for s in hot)
    os.makedirs(os.path.dirname(SCRIPT), exist_ok=True)
    with open(SCRIPT, "w") as f:
        f.write("/* Written by scripts/hot_text.py (make hot-text): the code the agent runs,\n"
                "   first in .text (README, \"Memory\"). %d sections, %d bytes. */\n" % (len(lines), total))
        f.write("SECTIONS\n{\n  %s :\n  {\n" % OUTPUT_SECTION)
        for line in lines:
            f.write("    %s\n" % line)
        f.write("  }\n}\nINSERT BEFORE .text;\n")


def scenario(prefix, work, slow, started=None):
    """Start-up, 1000 misses from 8 clients, hits on kept and new connections,
    /ping, errors, refreshNow, then background refreshes and revalidations
    past a 4 s TTL. `started(proc)` is called once the agent answers."""
    work = tempfile.mkdtemp(dir=work)
    upstream = common.FakeUpstream(work)
    token = secrets.token_hex(32)
    port = common.free_port()
    config = os.path.join(work, "agent-%d.toml" % port)
    common.write_config(config, port, ttl_seconds=4)
    proc, _, _ = common.start_agent(prefix + [BINARY, "--config", config], common.agent_env(token, upstream.port),
                                    work, port, timeout=120 if slow else 15)
    try:
        if started:
            started(proc)
        bench.fill_cache(port, token)
        filled = time.monotonic()
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        for _ in range(200):
            common.get(port, common.secret_path("bench-0000"), token, conn=conn)
        conn.close()
        for path, tok in ((common.secret_path("bench-0001"), token), ("/ping", None),
                          (common.secret_path("bench-0002"), "wrong"), (common.secret_path("missing-1"), token),
                          (common.secret_path("bench-0003") + "&refreshNow=true", token),
                          ("/secretsmanager/get", token), ("/nothing", token)):
            for _ in range(3):
                common.get(port, path, tok, timeout=60)
        # The fill's last secrets, read in the last part of their TTL, queue
        # background refreshes; its first ones, past their TTL, revalidate.
        time.sleep(max(0.0, 3.7 - (time.monotonic() - filled)))
        for i in range(980, 1000):
            common.get(port, common.secret_path("bench-%04d" % i), token, timeout=60)
        for i in range(20):
            common.get(port, common.secret_path("bench-%04d" % i), token, timeout=60)
        time.sleep(1)
    finally:
        common.stop(proc, timeout=60)
        common.stop(upstream.proc)


def callgrind_addresses(work):
    """Every instruction address the binary executed, as link addresses.
    Callgrind writes them relative to where the binary was loaded, except for
    code it could not attribute to the binary (`ob=???`, seen for about a
    third of the code run on threads): those are run-time addresses."""
    out = os.path.join(work, "callgrind.out")
    real, loaded = os.path.realpath(BINARY), {}

    def find_base(proc):
        # valgrind runs the tool in the process it starts, and maps the
        # binary's segments into it.
        with open("/proc/%d/maps" % proc.pid) as f:
            for line in f:
                parts = line.split()
                if len(parts) >= 6 and parts[5] == real and parts[1] == "r-xp":
                    loaded["base"] = int(parts[0].split("-")[0], 16) - int(parts[2], 16)

    scenario(["valgrind", "--tool=callgrind", "--dump-instr=yes", "--compress-pos=no", "--compress-strings=no",
              "--callgrind-out-file=" + out], work, slow=True, started=find_base)
    if "base" not in loaded:
        sys.exit("callgrind: %s is not in valgrind's memory map" % real)
    offset, addrs = None, set()
    with open(out) as f:
        for line in f:
            if line.startswith("ob="):
                name = line[3:].strip()
                offset = 0 if os.path.realpath(name) == real else loaded["base"] if name == "???" else None
            elif offset is not None and line.startswith("0x"):
                addrs.add(int(line.split()[0], 16) - offset)
    return addrs


def fault_addresses(work):
    """Link addresses of the code pages the binary faulted in at full speed."""
    data = os.path.join(work, "faults.data")
    scenario(["perf", "record", "-q", "-e", "page-faults", "-c", "1", "-d", "-o", data, "--"], work, slow=False)
    text = subprocess.run(["perf", "script", "-i", data, "--show-mmap-events", "-F", "addr"],
                          capture_output=True, text=True, check=True).stdout
    real, base, addrs = os.path.realpath(BINARY), None, []
    for line in text.splitlines():
        if "PERF_RECORD_MMAP" in line:
            m = re.search(r"\[0x([0-9a-f]+)\(0x[0-9a-f]+\) @ 0x([0-9a-f]+) .*\]: r-xp (\S+)", line)
            if m and m.group(3) == real:
                base = int(m.group(1), 16) - int(m.group(2), 16)
            continue
        word = line.strip()
        if base is not None and re.fullmatch(r"[0-9a-f]+", word):
            addrs.append(int(word, 16) - base)
    return addrs


if __name__ == "__main__":
    main()
