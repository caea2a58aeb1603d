"""The documentation: README.md and docs/*.md (issue #22, "README is a wall").

Every relative Markdown link, `[text](path)` or `[text](path#anchor)`, must name a
file of the repository, and every `#anchor` (on the same page or another) a heading
of its target, slugged as GitHub does. External links (http, https, mailto) are not
checked. README.md stays short and starts with the two commands.

Needs neither the agent binary nor any fixture: plain files only.
"""

import re
import sys
from pathlib import Path
from urllib.parse import unquote

import pytest

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
README_MAX_LINES = 300

FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
HEADING = re.compile(r"^ {0,3}(#{1,6})[ \t]+(.*?)[ \t]*#*[ \t]*$")
# An inline link or image: `[text](target)` or `[text](target "title")`. The text
# may hold code spans and nested brackets one level deep.
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\[\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
CODE_SPAN = re.compile(r"(`+)(.+?)\1")
EXTERNAL = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")


def documents():
    return [README] + sorted((ROOT / "docs").glob("*.md"))


def prose_lines(text):
    """The lines outside fenced code blocks, with their line numbers."""
    fence = None
    for number, line in enumerate(text.splitlines(), 1):
        opened = FENCE.match(line)
        if fence is None:
            if opened:
                fence = opened.group(1)
                continue
            yield number, line
        elif opened and opened.group(1)[0] == fence[0] and len(opened.group(1)) >= len(fence):
            if not line.strip().strip(fence[0]):
                fence = None


def slug(heading):
    """GitHub's anchor for a heading's text: markup dropped, lowercase, every
    character but letters, digits, spaces, hyphens and underscores dropped, spaces
    to hyphens."""
    text = CODE_SPAN.sub(lambda m: m.group(2), heading)
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", text)  # links keep their text
    text = re.sub(r"<[^>]+>", "", text)  # inline HTML
    text = text.replace("*", "")
    text = text.strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path):
    """Every anchor a page has: its headings' slugs, duplicates numbered -1, -2, ..."""
    seen = {}
    found = set()
    for _, line in prose_lines(path.read_text(encoding="utf-8")):
        match = HEADING.match(line)
        if not match:
            continue
        base = slug(match.group(2))
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")
    return found


def links(path):
    """(line number, target) for every link outside code."""
    for number, line in prose_lines(path.read_text(encoding="utf-8")):
        # A link inside a code span is code, not a link.
        line = CODE_SPAN.sub("", line)
        for match in LINK.finditer(line):
            yield number, match.group(1)


def broken_links(path):
    """What is wrong with the relative links of one page, one string each."""
    problems = []
    for number, target in links(path):
        if EXTERNAL.match(target):
            continue
        where = f"{path.relative_to(ROOT)}:{number}: ({target})"
        file_part, _, anchor = target.partition("#")
        if file_part:
            if file_part.startswith("/"):
                target_path = ROOT / unquote(file_part).lstrip("/")
            else:
                target_path = (path.parent / unquote(file_part)).resolve()
            if not target_path.exists():
                problems.append(f"{where}: no such file {file_part}")
                continue
            if ROOT not in target_path.parents and target_path != ROOT:
                problems.append(f"{where}: points outside the repository")
                continue
        else:
            target_path = path
        if anchor:
            if target_path.is_dir() or target_path.suffix != ".md":
                problems.append(f"{where}: an anchor into a file that is not Markdown")
            elif unquote(anchor) not in anchors(target_path):
                problems.append(
                    f"{where}: no heading with anchor #{anchor} in {target_path.relative_to(ROOT)}"
                )
    return problems


@pytest.mark.parametrize("page", documents(), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves(page):
    problems = broken_links(page)
    assert not problems, "broken links:\n" + "\n".join(problems)


def test_docs_pages_exist():
    pages = {p.name for p in (ROOT / "docs").glob("*.md")}
    for page in [
        "configuration.md",
        "http-api.md",
        "deploy.md",
        "migrating.md",
        "operating.md",
        "benchmarks.md",
        "design.md",
        "development.md",
    ]:
        assert page in pages


def test_readme_links_every_docs_page():
    targets = {target.partition("#")[0] for _, target in links(README)}
    for page in sorted((ROOT / "docs").glob("*.md")):
        assert f"docs/{page.name}" in targets, f"README.md does not link docs/{page.name}"


def test_readme_is_short():
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines"


def test_readme_starts_with_the_two_commands():
    text = README.read_text(encoding="utf-8")
    first = re.search(r"^```[^\n]*\n(.*?)^```", text, re.M | re.S)
    assert first, "README.md has no code block"
    # Nothing but the title comes before it.
    before = [line for line in text[: first.start()].splitlines() if line.strip()]
    assert len(before) <= 1 and all(line.startswith("# ") for line in before), before
    commands = [line.split("#")[0].strip() for line in first.group(1).splitlines()]
    assert commands[:2] == ["make demo", "make test"], commands


def test_no_page_over_1000_lines():
    for page in documents():
        count = len(page.read_text(encoding="utf-8").splitlines())
        assert count <= 1000, f"{page.relative_to(ROOT)} has {count} lines"


# The checker itself: a broken link must be found, whatever kind it is.


def test_slugs_follow_githubs_rules():
    assert slug("Why not tiny_http") == "why-not-tiny_http"
    assert slug("ECS / Fargate") == "ecs--fargate"
    assert slug("From AWS's agent 2.x") == "from-awss-agent-2x"
    assert slug("Kubernetes (EKS)") == "kubernetes-eks"
    assert slug("`make bench` and `make test`") == "make-bench-and-make-test"


def test_the_checker_finds_broken_links(tmp_path, monkeypatch):
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.md").write_text(
        "# A\n\n## Same\n\n## Same\n\n"
        "[ok](#same) [ok](#same-1) [ok](b.md#b-title) [ok](https://example.com/#x)\n"
        "[no file](missing.md) [no anchor](#nowhere) [no anchor](b.md#nowhere)\n"
        "[dup](#same-2)\n\n```\n[in code](missing-in-code.md)\n```\n",
        encoding="utf-8",
    )
    (docs / "b.md").write_text("# B title\n", encoding="utf-8")
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    problems = broken_links(docs / "a.md")
    assert len(problems) == 4, problems
    assert any("no such file missing.md" in p for p in problems)
    assert any("#nowhere in docs/a.md" in p for p in problems)
    assert any("#nowhere in docs/b.md" in p for p in problems)
    assert any("#same-2" in p for p in problems)
