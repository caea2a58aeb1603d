#!/usr/bin/env python3
"""Check the crate's module graph and where unsafe code may live.

The modules follow a request: listener (server) -> HTTP surface (api, token)
-> cache -> AWS client -> signing and the credential vocabulary -> transport,
with the credential sources above the AWS client they call, and small
foundation modules (config, logger, query, sync, ...) under everything. When
the import graph has the same shape and no cycle, each layer can be read,
tested and changed knowing only the layers below it.

For every file under src/ this collects the crate paths its production code
names: `use` trees (nested braces, `as`, globs, `self`, `super`) and inline
paths such as `crate::aws::retry::random_unit()` or `super::env_var(name)`.
In main.rs, `secrets_manager_agent::` stands for `crate::`. Each path counts as
an import of the module defining what it names: the longest module prefix of
the path, unless that module brings the next name in with `use` - a re-export
such as aws/mod.rs's `pub use secrets_manager::SecretsManager`, or an import
a child reaches with `super::`. Then the path is followed through that `use`,
so `crate::aws::SecretsManager` imports aws::secrets_manager, not aws: else a
re-export in a low module would let a lower layer reach a higher one unseen.
A name a module neither defines nor imports by name comes from its glob
import (`pub use x::*`); with several globs that cannot be told, and is
reported. Comments, string and char literals and `#[cfg(test)]` items are
skipped: tests may use helpers from anywhere. A module's `mod x;` lines and
its `use`/`pub use` of its own descendants are structure, not imports; its
code calling into a child (`profile::Provider::new()`) is an import, and so is
a child's `super::x`.

Unsafe code is confined to one module (UNSAFE_MODULE, `os`): lib.rs says
`#![deny(unsafe_code)]` and `#[allow(unsafe_code)] pub mod os;`, but any other
module could lift the deny with its own allow. So, in all code including
tests (comments and literals skipped): the `unsafe` keyword, and `#[no_mangle]`,
`#[export_name]`, `#[link_section]` (unsafe_code fires on them too), appear
only in that module's files; `allow`, `expect` or `warn` of `unsafe_code`
appears only on its `mod` line in lib.rs; lib.rs and main.rs open with
`#![deny(unsafe_code)]` or `#![forbid(unsafe_code)]`.

Checks, exit status 1 when one fails:
  1. no cycle between file modules (each cycle is printed with the code making it);
  2. every module matches a pattern in LAYERS, and it imports only modules in
     its own layer or below;
  3. unsafe code only in UNSAFE_MODULE, as above (each place as file:line).

Usage: python3 scripts/check_layers.py [--print | -v] [SRC_DIR]
  --print, -v  also print the layers top to bottom with each module's imports
  SRC_DIR      default: the src/ next to this scripts/ folder
"""

import argparse
import re
import sys
from collections import deque, namedtuple
from pathlib import Path

# Top to bottom. A module may import modules of its own layer or of any layer
# below, never above. "server" matches server and server::*; the longest
# matching pattern decides, so "server::http" is placed apart from "server".
# "<main>" is src/main.rs; "<lib>" is src/lib.rs, which needs a layer only if
# code names it (today it holds only `mod` lines). A pattern matching no module is fine.
LAYERS = [
    ("binary", ["<main>"]),                       # src/main.rs: command line only
    ("start-up", ["agent", "probe"]),             # wiring: config, credentials, cache, listener; probe: ping/get
    ("listener", ["server"]),                     # sockets, epoll, workers, connection I/O
    ("HTTP surface", ["api", "token"]),           # routes, checks, status codes and bodies
    ("HTTP messages", ["server::http"]),          # request/response types, pure head parser
    ("cache", ["cache", "roles"]),               # roles: the upstream client per roleArn
    ("credential sources", ["credentials"]),      # env, profiles, web identity, container, IMDS
    ("AWS services", ["aws::secrets_manager", "aws::ssm", "aws::sts"]),
    ("AWS client", ["aws::client", "aws", "aws::retry"]),
    ("signing and credentials", ["aws::sign", "aws::identity"]),
    ("transport", ["aws::transport", "aws::endpoint", "aws::error"]),
    ("foundation", ["config", "logger", "secret", "query", "iso8601",
                    "env", "random", "clock", "sync", "os", "metrics",
                    "aws::arn"]),                 # pure ARN checks: for the API and the config file
]

# The only module whose files may hold unsafe code (src/os.rs or src/os/...), a child of
# the crate root: src/lib.rs denies `unsafe_code` for the crate and allows it on this `mod`.
UNSAFE_MODULE = "os"

LIB_NAME = "secrets_manager_agent"  # how main.rs names the library
MAIN = ("<main>",)                  # module of src/main.rs; () is src/lib.rs
SHOWN_REFS = 3                      # code references printed per edge

RAW_STRING = re.compile(r'(?<!\w)[bc]?r(#*)"')
CHAR = re.compile(r"'(?:\\(?:u\{[0-9a-fA-F]+\}|x[0-9a-fA-F]{2}|.)|[^\\'\n])'")
CFG_TEST = re.compile(r"#\s*\[\s*cfg\s*\(\s*test\s*\)\s*\]")
ATTRIBUTE = re.compile(r"\s*#\s*\[[^\]]*\]")
TEST_MOD = re.compile(r"\s*(?:pub\s*(?:\([^)]*\))?\s*)?mod\s+(\w+)\s*;")
SEMICOLON = re.compile(r"\s*;")
USE = re.compile(r"\buse\b([^;]*);")
USE_TOKEN = re.compile(r"::|[{}*,]|\w+")
KEYWORDS = {"crate", "self", "super", "_"}
DEFINITION = re.compile(r"\b(?:(?:fn|struct|enum|union|trait|type|const|static|mod)\s+(?:mut\s+)?"
                        r"|macro_rules!\s*)(\w+)")

ATTRIBUTE_START = re.compile(r"#\s*(!?)\s*\[")
MOD_ITEM = re.compile(r"\s*(?:pub\s*(?:\([^)]*\)\s*)?)?mod\s+(\w+)\b")
# The unsafe_code lint also fires on these attributes, which need no `unsafe` keyword in 2021.
UNSAFE = re.compile(r"\b(unsafe)\b|#\s*\[\s*(no_mangle|export_name|link_section)\b")
LIFTS_UNSAFE_DENY = re.compile(r"\b(?:allow|expect|warn)\s*\([^()]*\bunsafe_code\b")
DENIES_UNSAFE = re.compile(r"#\s*!\s*\[\s*(?:deny|forbid)\s*\([^()]*\bunsafe_code\b")

# What a module's `use` items bring into it: {name: path from the crate root}, the crate
# modules it glob-imports (`use x::*`), and the other names it has: its own items and
# what it imports from other crates.
Scope = namedtuple("Scope", "bindings globs defined")
NO_SCOPE = Scope({}, [], set())


class Unresolved(Exception):
    """A path goes through a module with several globs and names none of their items by name."""


def name(module):
    return "<lib>" if module == () else "::".join(module)


def line_at(code, i):
    return code.count("\n", 0, i) + 1


def blank(text):
    """Spaces for everything but newlines, so offsets and line numbers still hold."""
    return re.sub(r"[^\n]", " ", text)


def literal_end(text, i):
    """End of the comment, string or char literal starting at text[i], or None."""
    if text.startswith("//", i):
        j = text.find("\n", i)
        return len(text) if j < 0 else j
    if text.startswith("/*", i):  # block comments nest in Rust
        depth, j = 0, i
        while j < len(text):
            if text.startswith("/*", j):
                depth, j = depth + 1, j + 2
            elif text.startswith("*/", j):
                depth, j = depth - 1, j + 2
                if depth == 0:
                    return j
            else:
                j += 1
        return len(text)
    raw = RAW_STRING.match(text, i)
    if raw:
        j = text.find('"' + raw.group(1), raw.end())
        return len(text) if j < 0 else j + 1 + len(raw.group(1))
    if text[i] == '"':
        j = i + 1
        while j < len(text) and text[j] != '"':
            j += 2 if text[j] == "\\" else 1
        return j + 1
    char = CHAR.match(text, i)  # a lifetime ('a) has no closing quote
    return char.end() if char else None


def strip_literals(text):
    out, i = [], 0
    while i < len(text):
        j = literal_end(text, i)
        out.append(text[i] if j is None else blank(text[i:j]))
        i = i + 1 if j is None else j
    return "".join(out)


def item_end(code, i):
    """End of the item starting at code[i]: its `;`, or its closing brace (and a `;` after it)."""
    depth = 0
    for j in range(i, len(code)):
        if code[j] in "([{":
            depth += 1
        elif code[j] in ")]}":
            depth -= 1
            if depth < 0:  # the enclosing block ends: the item was its last part
                return j
            if depth == 0 and code[j] == "}":
                semicolon = SEMICOLON.match(code, j + 1)
                return semicolon.end() if semicolon else j + 1
        elif code[j] == ";" and depth == 0:
            return j + 1
    return len(code)


def drop_test_items(code):
    """Blank every `#[cfg(test)]` item; also return the names of `#[cfg(test)] mod x;` files."""
    test_mods = []
    while found := CFG_TEST.search(code):
        i = found.end()
        while attribute := ATTRIBUTE.match(code, i):
            i = attribute.end()
        if test_mod := TEST_MOD.match(code, i):
            test_mods.append(test_mod.group(1))
        j = item_end(code, i)
        code = code[: found.start()] + blank(code[found.start() : j]) + code[j:]
    return code, test_mods


def use_paths(tree):
    """Expand a use tree: `a::{b, c::d as e, f::*}` -> (a::b, b), (a::c::d, e), (a::f, None)."""
    tokens = USE_TOKEN.findall(tree) + [";"]
    out = []

    def walk(i, prefix):
        path = list(prefix)
        while True:
            token = tokens[i]
            if token in (",", "}", ";"):
                return i
            if token == "{":
                i += 1
                while tokens[i] not in ("}", ";"):
                    i = i + 1 if tokens[i] == "," else walk(i, path)
                return i + 1
            if token == "*":
                out.append((path, None))
                return i + 1
            i += 1
            if token == "::":
                continue
            if not (token == "self" and path):  # `a::{self}` is `a`
                path.append(token)
            if tokens[i] == "as":
                out.append((path, tokens[i + 1]))
                return i + 2
            if tokens[i] != "::":
                out.append((path, path[-1]))
                return i

    walk(0, [])
    return out


def absolute(segments, here, aliases):
    """The path from the crate root that `segments` names in module `here`, or None."""
    head, rest = segments[0], tuple(segments[1:])
    if head == LIB_NAME:
        return rest
    if head in aliases:
        return aliases[head] + rest
    if here == MAIN or head not in ("crate", "self", "super"):
        return None  # another crate, a local item, or (in main.rs) the binary itself
    if head == "crate":
        return rest
    if head == "self":
        return here + rest
    base = here[:-1]
    while rest[:1] == ("super",):
        base, rest = base[:-1], rest[1:]
    return base + rest


def owner(path, modules):
    """The longest prefix of `path` that is a module."""
    return next(path[:k] for k in range(len(path), -1, -1) if path[:k] in modules)


def resolve(path, modules, scopes):
    """The module defining what `path` names, following the `use` items it goes through.

    That is the longest module prefix of `path`, unless that module brings the next name in
    with `use` (a `pub use` re-export, or an import its children reach with `super::`): then
    it is wherever that `use` leads. `crate::aws::SecretsManager` is aws::secrets_manager.
    A name the module neither defines nor imports by name comes from its glob import.
    """
    seen = set()
    while path not in seen:
        seen.add(path)
        module = owner(path, modules)
        if module == path:
            return module
        scope, item = scopes.get(module, NO_SCOPE), path[len(module)]
        if item in scope.bindings:
            path = scope.bindings[item] + path[len(module) + 1 :]
        elif item in scope.defined or not scope.globs:
            return module
        elif len(scope.globs) == 1:
            path = scope.globs[0] + path[len(module) :]
        else:
            raise Unresolved(module, item)
    return owner(path, modules)  # `use` items going round in circles: the compiler rejects them


def scope_of(uses, here, aliases, code, modules):
    """What the `use` items of module `here` bring into it, and what it defines (see Scope)."""
    bindings, globs, defined = {}, [], set(DEFINITION.findall(code))
    for _, (segments, alias) in uses:
        path = absolute(segments, here, aliases)
        if path is not None and alias is None:  # a glob; `self::Kind::*` is an enum's variants
            globs += [path] if path in modules else []
        elif path is not None and alias not in KEYWORDS:
            bindings[alias] = path
        elif path is None and alias:  # `pub use libc::pollfd as PollFd`: another crate's item
            defined.add(alias)
    return Scope(bindings, globs, defined)


def scan_file(file, here, modules):
    """The crate paths production code names, the module's Scope, and its `#[cfg(test)]` mods.

    Each path is (path from the crate root, line, is a `use`, path as written).
    """
    code, test_mods = drop_test_items(strip_literals(file.read_text(encoding="utf-8")))
    uses = [(m.start(), segments) for m in USE.finditer(code) for segments in use_paths(m.group(1))]
    # Child modules are in scope by name, and `use crate::aws::sts;` lets `sts::x` name aws::sts.
    aliases = {m[-1]: m for m in modules if here != MAIN and m[:-1] == here and m != ()}
    for _ in range(2):  # two passes, so the order of `use` items does not matter
        for _, (segments, alias) in uses:
            path = absolute(segments, here, aliases)
            if path in modules and alias and alias not in KEYWORDS:
                aliases[alias] = path
    scope = scope_of(uses, here, aliases, code, modules)
    refs = [(at, segments, True) for at, (segments, _) in uses]
    code = USE.sub(lambda m: blank(m.group(0)), code)
    heads = "|".join(map(re.escape, ["crate", "self", "super", LIB_NAME, *aliases]))
    for m in re.finditer(rf"(?<![\w:])(?:{heads})(?:\s*::\s*\w+)+", code):
        refs.append((m.start(), re.findall(r"\w+", m.group(0)), False))
    found = []
    for at, segments, is_use in refs:
        path = absolute(segments, here, aliases)
        if path is not None:
            found.append((path, line_at(code, at), is_use, "::".join(segments)))
    return found, scope, test_mods


def module_of(relative):
    parts = relative.with_suffix("").parts
    if parts in (("main",), ("lib",)):
        return MAIN if parts == ("main",) else ()
    return parts[:-1] if parts[-1] == "mod" else parts


def build_graph(src):
    """({module: file as shown}, {module: {imported module: [(file:line, is a `use`, path)]}},
    [paths whose module cannot be told, as errors])."""
    files = {module_of(p.relative_to(src)): p for p in sorted(src.rglob("*.rs"))}
    shown = {m: p.relative_to(src.parent) for m, p in files.items()}
    modules = (set(files) | {()}) - {MAIN}
    scans = {here: scan_file(file, here, modules) for here, file in files.items()}
    scopes = {here: scope for here, (_, scope, _) in scans.items()}
    test_only = [here + (m,) for here, (_, _, test_mods) in scans.items() for m in test_mods]
    graph = {m: {} for m in files if not any(m[: len(t)] == t for t in test_only)}
    graph.setdefault((), {})
    unresolved = []
    for here, (found, _, _) in scans.items():
        for path, line, is_use, text in found if here in graph else []:
            place = f"{shown[here]}:{line}"
            try:
                target = resolve(path, modules, scopes)
            except Unresolved as e:
                unresolved.append(unresolved_error(place, text, *e.args, scopes))
                continue
            # `use`/`pub use` of own descendants is structure, like `mod x;`; calling them is not
            if target != here and not (is_use and target[: len(here)] == here) and target in graph:
                graph[here].setdefault(target, []).append((place, is_use, text))
    if not graph[()] and not any(() in targets for targets in graph.values()):
        del graph[()]  # lib.rs only declares modules: it needs no layer
    return shown, graph, unresolved


def unresolved_error(place, text, module, item, scopes):
    globs = ", ".join(name(g) for g in scopes[module].globs)
    return (f"{place}: cannot tell which module {text} comes from: {name(module)} has glob "
            f"imports of {globs} and no `use` naming {item}; import {item} by name there")


def layer_of(module, layers):
    """Index of the layer with the longest pattern matching `module`, or None."""
    text, best = name(module), (0, None)
    for index, (_, patterns) in enumerate(layers):
        for pattern in patterns:
            if (text == pattern or text.startswith(pattern + "::")) and len(pattern) > best[0]:
                best = (len(pattern), index)
    return best[1]


def cycles(graph):
    """Strongly connected components (Tarjan) of more than one module."""
    index, low, stack, found = {}, {}, [], []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = stack[stack.index(v) :]
            del stack[stack.index(v) :]
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def shortest_cycle(graph, start, within):
    """The shortest path start -> ... -> start inside `within` (breadth first)."""
    parent, queue = {start: None}, deque([start])
    while queue:
        v = queue.popleft()
        for w in sorted(graph[v]):
            if w == start:
                path = [v]
                while path[-1] != start:
                    path.append(parent[path[-1]])
                return path[::-1]
            if w in within and w not in parent:
                parent[w] = v
                queue.append(w)


def edge_refs(graph, a, b):
    """The code making edge a -> b, one line per place: `src/x.rs:7  use super::A, super::B`."""
    places = {}
    for place, is_use, path in graph[a][b]:
        paths = places.setdefault((place, "use " if is_use else ""), [])
        paths += [] if path in paths else [path]
    lines = [f"      {place}  {use}{', '.join(paths)}" for (place, use), paths in places.items()]
    more = [f"      ... and {len(lines) - SHOWN_REFS} more"] if len(lines) > SHOWN_REFS else []
    return lines[:SHOWN_REFS] + more


def cycle_errors(graph):
    """One error per group of modules in a cycle: its shortest cycles and the code making them."""
    errors = []
    for component in cycles(graph):
        loops = set()
        for start in component:
            loop = shortest_cycle(graph, start, set(component))
            first = loop.index(min(loop))  # the same cycle found from another start is one cycle
            loops.add(tuple(loop[first:] + loop[:first]))
        edges = sorted({(loop[k - 1], loop[k]) for loop in loops for k in range(len(loop))})
        lines = [f"import cycle between {', '.join(map(name, component))}:"]
        lines += ["  " + " -> ".join(map(name, loop + (loop[0],))) for loop in sorted(loops)]
        lines.append("  made by (a cycle goes when one of its edges goes):")
        for a, b in edges:
            lines += [f"    {name(a)} -> {name(b)}"] + edge_refs(graph, a, b)
        errors.append("\n".join(lines))
    return errors


def layer_errors(files, graph, layers):
    """Modules in no layer, and imports of a module in a higher layer."""
    errors, layer = [], {m: layer_of(m, layers) for m in graph}
    for m in sorted(graph):
        if layer[m] is None:
            errors.append(f"module {name(m)} ({files.get(m, 'src/lib.rs')}) is in no layer: "
                          "add it to LAYERS in scripts/check_layers.py")
    for m in sorted(graph):
        for target in sorted(graph[m]):
            if None not in (layer[m], layer[target]) and layer[target] < layer[m]:
                lines = [f"upward import: {name(m)} (layer {layers[layer[m]][0]!r}) uses "
                         f"{name(target)} (layer {layers[layer[target]][0]!r}, above it)"]
                errors.append("\n".join(lines + edge_refs(graph, m, target)))
    return errors


def code_map(graph, layers):
    """The layers top to bottom, each module with what it imports."""
    layer = {m: layer_of(m, layers) for m in graph}
    width = max(len(name(m)) for m in graph)

    def rows(index):
        return [f"  {name(m):{width}}  -> {', '.join(map(name, sorted(graph[m]))) or '-'}"
                for m in sorted(graph) if layer[m] == index]

    lines = ["Layers, top to bottom (a module may import its own layer and those below):"]
    for index, (title, patterns) in enumerate(layers):
        lines += [f"\n{title}  [{', '.join(patterns)}]"] + (rows(index) or ["  (no module yet)"])
    if rows(None):
        lines += ["\nin no layer"] + rows(None)
    return lines


def closing(code, i):
    """End of the bracketed group opening at code[i]."""
    depth = 0
    for j in range(i, len(code)):
        depth += (code[j] in "([{") - (code[j] in ")]}")
        if depth == 0:
            return j + 1
    return len(code)


def attributes(code):
    """(start, end, is inner `#![..]`) of each attribute `#[..]` and `#![..]`, in order."""
    found, i = [], 0
    while start := ATTRIBUTE_START.search(code, i):
        i = closing(code, start.end() - 1)
        found.append((start.start(), i, bool(start.group(1))))
    return found


def crate_attributes(code):
    """The inner attributes a root file opens with: they apply to the whole crate."""
    texts, i = [], 0
    for start, end, inner in attributes(code):
        if not inner or code[i:start].strip():
            break
        texts.append(code[start:end])
        i = end
    return texts


def annotates_mod(code, i, module):
    """Whether the item after code[i] (skipping more attributes) is `mod module`."""
    while attribute := ATTRIBUTE.match(code, i):
        i = attribute.end()
    item = MOD_ITEM.match(code, i)
    return bool(item) and item.group(1) == module


def unsafe_in_file(code, shown, here, module):
    """Unsafe code outside `module`, and attributes lifting the crate's deny(unsafe_code)."""
    errors = []
    if here[:1] != (module,):
        errors += [f"{shown}:{line_at(code, m.start())}: unsafe code outside {module}: "
                   f"`{m.group(1) or f'#[{m.group(2)}]'}` (only {module} may use unsafe)"
                   for m in UNSAFE.finditer(code)]
    for start, end, inner in attributes(code):
        on_module = here == () and not inner and annotates_mod(code, end, module)
        if LIFTS_UNSAFE_DENY.search(code, start, end) and not on_module:
            attribute = " ".join(code[start:end].split())
            errors.append(f"{shown}:{line_at(code, start)}: `{attribute}` lifts the crate's "
                          f"deny(unsafe_code): only `mod {module}` in src/lib.rs may allow it")
    return errors


def unsafe_errors(src, module=UNSAFE_MODULE):
    """Unsafe code outside `module`; a crate root (lib.rs, main.rs) not denying unsafe code."""
    src, errors = Path(src), []
    for file in sorted(src.rglob("*.rs")):
        shown, here = file.relative_to(src.parent), module_of(file.relative_to(src))
        code = strip_literals(file.read_text(encoding="utf-8"))
        errors += unsafe_in_file(code, shown, here, module)
        if here in ((), MAIN) and not any(map(DENIES_UNSAFE.match, crate_attributes(code))):
            errors.append(f"{shown}: no #![deny(unsafe_code)] or #![forbid(unsafe_code)] at "
                          "the top: unsafe code would be allowed in every module")
    return errors


def check(src, layers=LAYERS, unsafe_module=UNSAFE_MODULE):
    """Every problem found in the src/ tree at `src`, as printable text."""
    files, graph, unresolved = build_graph(Path(src))
    return (unresolved + cycle_errors(graph) + layer_errors(files, graph, layers)
            + unsafe_errors(src, unsafe_module))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    default_src = Path(__file__).resolve().parent.parent / "src"
    parser.add_argument("src", nargs="?", type=Path, default=default_src,
                        help="the crate's src/ folder (default: %(default)s)")
    parser.add_argument("--print", "-v", dest="show", action="store_true",
                        help="print the layers top to bottom with each module's imports")
    args = parser.parse_args(argv)
    _, graph, _ = build_graph(args.src)
    if args.show:
        print("\n".join(code_map(graph, LAYERS)) + "\n")
    errors = check(args.src)
    for error in errors:
        print(error + "\n")
    if errors:
        print(f"check_layers: {len(errors)} problem(s) in {args.src}", file=sys.stderr)
        return 1
    print(f"check_layers: {len(graph)} modules, no cycle, every import goes down the layers, "
          f"unsafe code only in {UNSAFE_MODULE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
