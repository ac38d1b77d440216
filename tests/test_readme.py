"""The README stays a short guide, and the Markdown files point at each other correctly.

The README once grew into a 1,300-line lab notebook; the studies now live in docs/studies.md and
the benchmarks in bench/README.md. These tests keep it that way: a length limit, the Quickstart
in step with what CI runs, and every relative link and #anchor between the Markdown files
resolving to a file and a heading that exist (GitHub's anchor rule, written out below).
"""
from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
MAX_README_LINES = 300
DOCS = [README, ROOT / "bench" / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

FENCE = re.compile(r"^\s*(```|~~~)")
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
INLINE_CODE = re.compile(r"`[^`]*`")


def prose_lines(text: str) -> list[str]:
    """The lines outside fenced code blocks (a '# comment' in a bash block is not a heading)."""
    lines, fenced = [], False
    for line in text.splitlines():
        if FENCE.match(line):
            fenced = not fenced
            continue
        if not fenced:
            lines.append(line)
    return lines


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: link syntax reduced to its text, lower case, every character
    that is not a letter, digit, '_', '-' or space dropped, spaces turned into '-'."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading).strip().lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every heading's anchor in a Markdown file; a repeated heading gets -1, -2, ... as on GitHub."""
    seen: dict[str, int] = {}
    out = set()
    for line in prose_lines(path.read_text(encoding="utf-8")):
        m = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if not m:
            continue
        base = slug(m.group(1))
        n = seen.get(base, 0)
        seen[base] = n + 1
        out.add(base if n == 0 else f"{base}-{n}")
    return out


def links(path: Path) -> list[str]:
    """Link and image targets in the prose (code spans and blocks hold examples, not links)."""
    found = []
    for line in prose_lines(path.read_text(encoding="utf-8")):
        found += LINK.findall(INLINE_CODE.sub("", line))
    return found


def quickstart_commands(text: str) -> list[str]:
    """The commands of the first bash block under '## Quickstart', a continued line joined."""
    section = text.split("\n## Quickstart", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```bash\n(.*?)```", section, re.S).group(1)
    joined = re.sub(r"\\\n\s*", " ", block)
    return [line.strip() for line in joined.splitlines() if line.strip() and not line.strip().startswith("#")]


def ci_test_command() -> str:
    """The command `.ci/run` runs after its "README's test command" comment (the last comment
    naming it: the script's header names it too)."""
    lines = (ROOT / ".ci" / "run").read_text().splitlines()
    i = max(k for k, line in enumerate(lines) if line.lstrip().startswith("#") and "README's test command" in line)
    return next(line.strip() for line in lines[i + 1:] if line.strip())


def test_the_readme_is_a_short_guide():
    n = len(README.read_text(encoding="utf-8").splitlines())
    assert n <= MAX_README_LINES, (f"README.md has {n} lines (at most {MAX_README_LINES}): move study results to "
                                   "docs/studies.md, benchmarks to bench/README.md, reference to docs/")


def test_the_quickstart_is_two_commands_and_the_second_is_what_ci_runs():
    commands = quickstart_commands(README.read_text(encoding="utf-8"))
    assert len(commands) == 2, commands
    # CI passes pip's -q to keep its log short; apart from that the two must be the same command
    assert commands[1] == ci_test_command().replace("pip install -q ", "pip install ", 1)


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_and_anchor_resolves(doc):
    broken = []
    for target in links(doc):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):   # http:, https:, mailto: — not checked offline
            continue
        file_part, _, anchor = target.partition("#")
        dest = (doc.parent / file_part).resolve() if file_part else doc
        if not dest.exists():
            broken.append(f"{target}: no file {dest.relative_to(ROOT) if dest.is_relative_to(ROOT) else dest}")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            broken.append(f"{target}: no heading with anchor #{anchor} in {dest.relative_to(ROOT)}")
    assert not broken, "\n".join(broken)


def test_the_slugger_follows_githubs_rule():
    assert slug("Does the agent beat a rule? The study over training seeds") == \
        "does-the-agent-beat-a-rule-the-study-over-training-seeds"
    assert slug("Φ, C and memory use: fresh, text-trained, Φ-trained") == "φ-c-and-memory-use-fresh-text-trained-φ-trained"
    assert slug("`--agent`: adapt, then generate") == "--agent-adapt-then-generate"
    assert slug("Configuration (`PPOConfig`, all knobs)") == "configuration-ppoconfig-all-knobs"


def test_each_bench_block_lives_once_in_the_file_its_script_names():
    """A bench script with --doc rewrites the block between its markers; the file its help names
    must hold that block exactly once, and no other Markdown file a second copy of it."""
    checked = 0
    for script in sorted((ROOT / "bench").glob("*.py")):
        src = script.read_text(encoding="utf-8")
        marker = re.search(r'START, END = "(<!-- [\w-]+:start -->)", "(<!-- [\w-]+:end -->)"', src)
        named = re.search(r"the project's: ([\w./-]+\.md)\)", src)
        if not marker:
            continue
        assert named, f"{script.name} writes a block but its --doc help names no file"
        start, end = marker.groups()
        target = ROOT / named.group(1)
        text = target.read_text(encoding="utf-8")
        assert text.count(start) == 1 and text.count(end) == 1 and text.index(start) < text.index(end), \
            f"{named.group(1)} should hold {start} ... {end} once"
        elsewhere = [str(p.relative_to(ROOT)) for p in DOCS if p != target and start in p.read_text(encoding="utf-8")]
        assert not elsewhere, f"{start} is also in {elsewhere}"
        checked += 1
    assert checked >= 2   # env_dynamics.py and env_throughput.py
