"""Writes link/hot-text.ld, the order of the static binary's code: the code
the agent runs in one block, everything else after it (README, "Memory").

Why: the kernel maps a program's code 64 KiB at a time around each page it
touches. Laid out as the compiler emits it, the ~600 KiB that start-up,
serving and fetching run over plain HTTP were spread over 27 of the binary's
37 such blocks, so 1.6 MiB of code stayed mapped: three quarters of the
agent's RSS at rest.

How (`make hot-text`; needs valgrind, perf and openssl):
1. links the static binary with a linker map (build.rs, HOT_TEXT_MAP);
2. runs it under callgrind through `scenario` (RUNS): against the fake
   upstream over HTTP, over HTTPS with an RSA chain from a CA made for the
   run, and with the built-in roots (which refuse that CA after doing what
   they do with AWS's chain), recording every instruction address it
   executes, and finds each one's input section in the map. Not covered:
   the fake (Python's OpenSSL) cannot agree on the post-quantum key
   exchange the agent offers first, so only its key generation is in;
3. writes the script, relinks, and runs the same at full speed under
   `perf record -e page-faults`: code that faults outside the block ran on a
   path callgrind's slower schedule did not take (or that valgrind does not
   emulate, such as SHA-NI); its sections are added and the loop repeats
   until nothing faults outside (at most --rounds times).

Rust symbols carry hashes of the toolchain, the package's version and its
features. A section is named with its hash replaced by `*` where that glob
names this one section or only sections that are in the block anyway, so
that the script keeps matching as the code changes; the others keep their
hash. The header records the rustc that wrote the script:
tests/integration/test_hot_text.py holds a build with that rustc to the
script, and a build with another one only gets the part that still matches.
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
BINARY = bench.STATIC_BIN  # what `make static` builds
OUTPUT_SECTION = ".text.agent_hot"
LEGACY_HASH = re.compile(r"17h[0-9a-f]{16}E$")
# Callgrind may leave a few addresses outside the binary's sections (vdso).
MOST_LOST = 0.02


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=6, help="perf rounds after the callgrind run")
    args = p.parse_args()
    for tool in ("valgrind", "perf", "openssl", "readelf", "make", "git"):
        if not shutil.which(tool):
            sys.exit("%s not found (apt-get install valgrind linux-perf openssl binutils make git)" % tool)
    work = tempfile.mkdtemp(prefix="hot-text-")
    try:
        generate(work, args.rounds)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def generate(work, rounds):
    map_path = os.path.join(work, "agent.map")
    tls = make_pki(work)
    sections = link(map_path)
    # Each section's group: 0 if the run over HTTP ran it, 1 if only the runs
    # over HTTPS did. The script puts group 0 first, so that an agent whose
    # upstream is plain HTTP (the benchmarks' fake) maps only that part.
    hot, lost, found = {}, 0, 0
    for (_, group), addrs in zip(RUNS, callgrind_addresses(work, tls)):
        for addr in addrs:
            section = sections.find(addr)
            if section:
                hot.setdefault(section, group)
                found += 1
            else:
                lost += 1
    if lost > MOST_LOST * (lost + found):
        sys.exit("callgrind: %d of %d addresses are in no code section of the map" % (lost, lost + found))
    print("callgrind: %d sections, %d KiB" % (len(hot), sum(s.size for s in hot) // 1024), flush=True)
    write_script(hot, sections)

    for round_ in range(rounds):
        sections = link(map_path)
        block = sections.outputs.get(OUTPUT_SECTION)
        if not block:
            sys.exit("the map has no %s: the linker did not read %s" % (OUTPUT_SECTION, SCRIPT))
        outside = {}
        for (_, group), addrs in zip(RUNS, fault_addresses(work, tls)):
            for addr in addrs:
                section = sections.find(addr) if not block[0] <= addr < block[1] else None
                if section and section not in hot:
                    outside.setdefault(section, group)
        print("round %d: block %d KiB, %d sections faulted outside it" %
              (round_ + 1, (block[1] - block[0]) // 1024, len(outside)), flush=True)
        for s in sorted(outside, key=lambda s: s.addr):
            print("    %s (%s)" % (s.name[:100], s.file[-60:]))
        if not outside:
            break
        hot.update(outside)
        write_script(hot, sections)
    else:
        if rounds:
            print("warning: code still faulted outside the block after %d rounds: run again" % rounds)
        link(map_path)
    print("wrote %s" % os.path.relpath(SCRIPT, REPO))


class Section:
    """One input section where one link placed it; the same section in
    another link (another address) compares equal."""
    __slots__ = ("name", "addr", "size", "file")

    def __init__(self, name, addr, size, file):
        self.name, self.addr, self.size = name, addr, size
        # Archives the compiler unpacks land in a new temporary directory
        # (deps/rustcXXXXXX/) at every link.
        self.file = re.sub(r"/rustc[0-9A-Za-z]+/", "/", file)

    def __eq__(self, other):
        if not isinstance(other, Section):
            return NotImplemented
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
                else:
                    m = address.match(line) if pending else None
                    if not m:
                        pending = None
                        continue
                    (indent, name), (addr, size, file) = pending, m.groups()
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


def link(map_path):
    """`make static` with a linker map; returns the map's sections. A script
    the linker refuses is put back as it was."""
    env = dict(os.environ, HOT_TEXT_MAP=map_path)
    env.pop("HOT_TEXT_OFF", None)
    done = subprocess.run(["make", "--no-print-directory", "-C", REPO, "static"], env=env,
                          stdout=subprocess.DEVNULL)
    if done.returncode != 0:
        subprocess.run(["git", "-C", REPO, "checkout", "--", os.path.relpath(SCRIPT, REPO)])
        sys.exit("the link failed with the script written; %s is back as committed" % SCRIPT)
    return Sections(map_path)


def pattern(section, sections, hot_names):
    """The script's line for one input section."""
    if section.name == ".text":
        # An object without function sections (musl's libc.a, aws-lc's
        # assembly, start files): its code as a whole. Archive members are
        # named `archive(member)`; the hashes cargo and the cc crate put in
        # those names are globbed.
        m = re.match(r"^(?:.*/)?([^/()]+\.(?:a|rlib))\(([^()]+)\)$", section.file)
        if m:
            archive = re.sub(r"-[0-9a-f]{16}\.", "-*.", m.group(1))
            member = re.sub(r"^[0-9a-f]{16}-", "*-", m.group(2))
            return "*%s:%s(.text)" % (archive, member)
        return "*%s(.text)" % os.path.basename(section.file)
    name = section.name
    globbed = LEGACY_HASH.sub("17h*E", name)
    if globbed != name:
        prefix = globbed[:-len("17h*E")]
        rivals = {n for n in sections.names if n.startswith(prefix) and fnmatch.fnmatchcase(n, globbed)}
        # Another instance of the same generic has the same path: the glob
        # would also move it, which costs nothing if it is hot too.
        if rivals <= hot_names:
            name = globbed
    return "*(%s)" % name


def write_script(hot, sections):
    """hot: section -> group; the groups are written in order."""
    hot_names = {s.name for s in hot}
    lines = []
    for group in sorted(set(hot.values())):
        patterns = sorted({pattern(s, sections, hot_names) for s, g in hot.items() if g == group})
        lines += [p for p in patterns if p not in lines]
    # The rustc that built the binary, as it records itself in .comment.
    comment = subprocess.run(["readelf", "-p", ".comment", BINARY], capture_output=True, text=True,
                             check=True).stdout
    m = re.search(r"rustc version (.+)$", comment, re.M)
    if not m:
        sys.exit("no rustc version in %s's .comment" % BINARY)
    rustc = "rustc " + m.group(1).strip()
    with open(SCRIPT, "w") as f:
        f.write("/* Written by scripts/hot_text.py (make hot-text) with %s: the code the\n"
                "   agent runs, in one block before .text (README, \"Memory\"); what a plain HTTP\n"
                "   upstream needs first, then what HTTPS adds. %d patterns, %d sections, %d bytes. */\n"
                % (rustc, len(lines), len(hot), sum(s.size for s in hot)))
        f.write("SECTIONS\n{\n  %s :\n  {\n" % OUTPUT_SECTION)
        for line in lines:
            f.write("    %s\n" % line)
        f.write("  }\n}\nINSERT BEFORE .text;\n")


def make_pki(work):
    """A CA and a certificate for 127.0.0.1 that it signed: (ca, cert, key)."""
    ca, ca_key = os.path.join(work, "ca.pem"), os.path.join(work, "ca.key")
    cert, key, csr = os.path.join(work, "cert.pem"), os.path.join(work, "cert.key"), os.path.join(work, "cert.csr")
    ext = os.path.join(work, "cert.ext")
    with open(ext, "w") as f:
        f.write("subjectAltName=IP:127.0.0.1\nbasicConstraints=critical,CA:FALSE\nextendedKeyUsage=serverAuth\n")
    # RSA, as AWS's endpoints serve.
    rsa = ["-newkey", "rsa:2048", "-nodes"]
    for cmd in (["req", "-x509", *rsa, "-keyout", ca_key, "-out", ca, "-days", "2", "-subj", "/CN=hot-text CA",
                 "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign"],
                ["req", *rsa, "-keyout", key, "-out", csr, "-subj", "/CN=127.0.0.1"],
                ["x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key, "-CAcreateserial", "-out", cert,
                 "-days", "2", "-extfile", ext]):
        subprocess.run(["openssl", *cmd], check=True, capture_output=True)
    return ca, cert, key


# The runs, each with its group in the script: over HTTP; over HTTPS with the
# run's CA as AWS_CA_BUNDLE; and over HTTPS with the built-in roots, which
# refuse the run's CA but verify the chain as they would AWS's.
RUNS = (("http", 0), ("https", 1), ("roots", 1))


def scenario(prefix, work, slow, run, tls, started=None):
    """Start-up, 1000 misses from 8 clients, hits on kept and new connections,
    /ping, errors, refreshNow, then background refreshes and revalidations
    past a 4 s TTL (for "roots": start-up and a few refused fetches).
    `tls` is (ca, cert, key); `started(proc)` is called once the agent
    answers."""
    work = tempfile.mkdtemp(dir=work)
    upstream = common.FakeUpstream(work, *(("--tls",) + tls[1:] if run != "http" else ()))
    token = secrets.token_hex(32)
    env = common.agent_env(token, upstream.port)
    for key in ("AWS_ENDPOINT_URL_SECRETS_MANAGER", "AWS_ENDPOINT_URL_STS"):
        env[key] = upstream.url
    if run == "https":
        env["AWS_CA_BUNDLE"] = tls[0]
    port = common.free_port()
    config = os.path.join(work, "agent-%d.toml" % port)
    common.write_config(config, port, ttl_seconds=4)
    proc, _, _ = common.start_agent(prefix + [BINARY, "--config", config], env, work, port,
                                    timeout=120 if slow else 15)
    try:
        if started:
            started(proc)
        if run == "roots":
            for i in range(3):
                common.get(port, common.secret_path("roots-%d" % i), token, timeout=60)
            return
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


def callgrind_addresses(work, tls):
    """Every instruction address the binary executed, as link addresses: a
    set for each of RUNS.
    Callgrind writes them relative to where the binary was loaded, except for
    code it could not attribute to the binary (`ob=???`, seen for about a
    third of the code run on threads): those are run-time addresses."""
    real, base, runs = os.path.realpath(BINARY), {}, []

    def find_base(proc):
        # valgrind runs the tool in the process it starts, and maps the
        # binary's segments into it.
        with open("/proc/%d/maps" % proc.pid) as f:
            for line in f:
                parts = line.split(None, 5)
                if len(parts) == 6 and parts[5].rstrip("\n") == real and parts[1] == "r-xp":
                    base[proc.pid] = int(parts[0].split("-")[0], 16) - int(parts[2], 16)

    out = os.path.join(work, "callgrind.%p.out")
    for run, _ in RUNS:
        scenario(["valgrind", "--tool=callgrind", "--dump-instr=yes", "--compress-pos=no",
                  "--compress-strings=no", "--callgrind-out-file=" + out], work, True, run, tls, started=find_base)
    if len(base) != len(RUNS):
        sys.exit("callgrind: found the binary in valgrind's memory map %d times of %d" % (len(base), len(RUNS)))
    for pid, loaded in base.items():  # in the order the runs started
        addrs, offset = set(), None
        runs.append(addrs)
        with open(out.replace("%p", str(pid))) as f:
            for line in f:
                if line.startswith("ob="):
                    name = line[3:].strip()
                    if os.path.realpath(name) == real:
                        offset = 0
                    elif name == "???":
                        offset = loaded
                    else:
                        offset = None
                elif offset is not None and line.startswith("0x"):
                    addrs.add(int(line.split()[0], 16) - offset)
    return runs


def fault_addresses(work, tls):
    """Link addresses of the pages the binary faulted in at full speed: a
    list for each of RUNS."""
    real, runs = os.path.realpath(BINARY), []
    for run, _ in RUNS:
        addrs = []
        runs.append(addrs)
        data = os.path.join(work, "faults-%s.data" % run)
        scenario(["perf", "record", "-q", "-e", "page-faults", "-c", "1", "-d", "-o", data, "--"], work, False,
                 run, tls)
        text = subprocess.run(["perf", "script", "-i", data, "--show-mmap-events", "-F", "addr"],
                              capture_output=True, text=True, check=True).stdout
        base = None
        for line in text.splitlines():
            if "PERF_RECORD_MMAP" in line:
                m = re.search(r"\[0x([0-9a-f]+)\(0x[0-9a-f]+\) @ 0x([0-9a-f]+) .*\]: r-xp (.+)$", line)
                if m and m.group(3).strip() == real:
                    base = int(m.group(1), 16) - int(m.group(2), 16)
                continue
            word = line.strip()
            if base is not None and re.fullmatch(r"[0-9a-f]+", word):
                addrs.append(int(word, 16) - base)
        if not addrs:
            sys.exit("perf: no page faults of %s recorded" % real)
    return runs


if __name__ == "__main__":
    main()
