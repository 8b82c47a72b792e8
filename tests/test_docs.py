"""The contract docs stay true to the code: every reason the code counts is documented, and nothing in
the repository points outside it."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"

# How the code names a reason when it counts a record as not delivered, or as malformed.
_DROPS = [r'\.drop\("([a-z_]+)"', r'_give_up\(items, "([a-z_]+)"', r'_count_drop\("([a-z_]+)"',
          r'_fallback\(line, "([a-z_]+)"', r'errno\.E[A-Z]+: "([a-z_]+)"']
_MALFORMED = [r'RecordError\(\s*"([a-z_]+)"', r'Reject\(\s*"([a-z_]+)"',
              r'_Refused\(\s*"([a-z_]+)"']  # the last: spool entries that are never read


def _reasons(patterns: list[str]) -> set[str]:
    found: set[str] = set()
    for path in (REPO / "shipper").rglob("*.py"):
        text = path.read_text()
        for pattern in patterns:
            found.update(re.findall(pattern, text))
    return found


def _documented(name: str) -> set[str]:
    return set(re.findall(r"`([a-z_]+)`", (DOCS / name).read_text()))


def test_every_drop_reason_in_the_code_is_in_transports_md() -> None:
    """A reason counted anywhere (daemon or shim) appears in docs/transports.md's drop reasons."""
    reasons = _reasons(_DROPS)
    assert {"sampled", "filtered", "queue_full", "expired", "spool_error"} <= reasons  # the patterns work
    assert reasons - _documented("transports.md") == set()


def test_every_malformed_reason_in_the_code_is_in_record_md() -> None:
    """A reason a record or line is refused under appears in docs/record.md's malformed records."""
    reasons = _reasons(_MALFORMED)
    assert {"not_json", "bad_trace_id", "end_before_start", "torn_line", "not_a_file", "symlink"} <= reasons
    assert reasons - _documented("record.md") == set()


def test_every_malformed_reason_built_from_a_prefix_is_in_record_md() -> None:
    """A reason the code builds as `f"prefix_{...}"` (the kafka receiver's `undecodable_<encoding>`) is
    documented with at least one full name under that prefix in docs/record.md."""
    prefixes = _reasons([r'Reject\(\s*f"([a-z_]+)\{'])
    assert "undecodable_" in prefixes  # the pattern works
    documented = _documented("record.md")
    assert {p for p in prefixes if not any(name.startswith(p) for name in documented)} == set()


def test_readme_lists_every_extra_of_pyproject() -> None:
    """Each optional-dependencies extra in pyproject.toml has its own line in the README's list of extras."""
    text = (REPO / "pyproject.toml").read_text()
    block = text.split("[project.optional-dependencies]", 1)[1].split("\n[", 1)[0]
    extras = set(re.findall(r"^([a-z][a-z0-9_-]*) = \[", block, re.MULTILINE))
    assert {"daemon", "grpc", "kafka", "bench", "test"} <= extras  # the pattern works
    listed = set(re.findall(r"^- `([a-z0-9_-]+)`: ", (REPO / "README.md").read_text(), re.MULTILINE))
    assert extras - listed == set()


def test_nothing_in_the_repository_points_outside_it() -> None:
    """No tracked file refers to the original contract's folder beside the checkout, or to the machine's paths."""
    files = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True).stdout
    outside = re.compile(r"\.\./" + "shared" + r"|/work/|parents\[2\]")  # split so this file passes itself
    offenders = []
    for name in files.split():
        path = REPO / name
        if name == "tests/test_docs.py" or "results" in path.parts or not path.is_file():
            continue
        try:
            text = path.read_text()
        except UnicodeDecodeError:
            continue
        offenders += [f"{name}:{n}" for n, line in enumerate(text.splitlines(), 1) if outside.search(line)]
    assert offenders == []


def test_docs_links_resolve() -> None:
    """Relative links in README and docs/ point at files that exist."""
    broken = []
    for page in [REPO / "README.md", *DOCS.glob("*.md")]:
        for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", page.read_text()):
            if not (page.parent / target).exists():
                broken.append(f"{page.name} -> {target}")
    assert broken == []
