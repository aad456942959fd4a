"""The repository stands alone: no tracked file names a path into somebody's checkout or home.

A hard-coded checkout path makes a test fail at collection in a clone anywhere else, or, worse,
silently check another copy of the project. Paths inside containers (``/app``, ``/opt/...``,
``/usr/bin/chromium``, ``/data``) are fine and are not matched.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# A path starting with a checkout or home folder (the work, home, root or Users folder at the
# top of the file system, or a Windows user folder). Not preceded by a word character, '.',
# ':', '/' or '-', so URLs and relative paths with such a folder inside do not count.
FORBIDDEN = re.compile(r"(?<![\w.:/-])/(?:work|home|root|Users)/|\b[A-Za-z]:\\\\?Users\\")

# (file, exact text) pairs that are allowed anyway, each with its reason. Keep this list short:
# an entry that no longer matches anything fails test_allowances_are_still_needed.
ALLOWED: dict[tuple[str, str], str] = {}


def tracked_files() -> list[str]:
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        if os.environ.get("CI"):
            pytest.fail("CI is set but git or the checkout's .git is missing: cannot list files")
        pytest.skip("not a git checkout (or no git): the tracked files cannot be listed")
    result = subprocess.run(
        ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True, timeout=60
    )
    return [name for name in result.stdout.decode().split("\0") if name]


def offending_lines(name: str, text: str) -> list[str]:
    found = []
    for number, line in enumerate(text.splitlines(), 1):
        for match in FORBIDDEN.finditer(line):
            rest = line[match.start() :].split()[0]
            if (name, rest) not in ALLOWED:
                found.append(f"{name}:{number}: {line.strip()[:120]}")
    return found


def tracked_texts() -> Iterator[tuple[str, str]]:
    """(name, text) of every tracked text file as it is in the work tree."""
    files = tracked_files()
    assert "pyproject.toml" in files  # listed from the right root
    for name in files:
        path = ROOT / name
        if not path.is_file():  # deleted in the work tree, not yet committed
            continue
        try:
            yield name, path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue  # binary


def tracked_problems(find: Callable[[str, str], list[str]]) -> list[str]:
    """What ``find(name, text)`` reports over every tracked text file."""
    return [problem for name, text in tracked_texts() for problem in find(name, text)]


# The examples are written with "~" for "/" so that this file does not trip its own guard.
@pytest.mark.parametrize(
    "line",
    [
        'ROOT = Path("~work~main")',
        "see ~home~alice~src~wecom-bus~README.md",
        "cd ~root~wecom-bus && make test",
        "open ~Users~bob~wecom-bus~docs",
        "`~work~wt~deploy`",
    ],
)
def test_the_guard_catches_checkout_and_home_paths(line: str) -> None:
    assert offending_lines("x", line.replace("~", "/"))


def test_the_guard_catches_windows_user_folders() -> None:
    assert offending_lines("x", "C:" + "\\Users\\carol\\wecom-bus")


@pytest.mark.parametrize(
    "line",
    [
        "executable_path=/usr/bin/chromium",
        "COPY --from=builder /opt/wecom-bus /opt/wecom-bus",
        "WORKDIR /app",
        "mountPath: /data",
        "https://example.com/home/index.html",
        "docs/home/intro.md and ~/wecom-bus",
        "/run/secrets/wecom-bus/WECOM_SECRET",
    ],
)
def test_the_guard_leaves_container_paths_and_urls_alone(line: str) -> None:
    assert not offending_lines("x", line)


def test_allowances_are_still_needed() -> None:
    for name, text in ALLOWED:
        assert text in (ROOT / name).read_text(encoding="utf-8"), (name, text)


# The team handbook the project was built from is not part of the repository, so nothing here
# may cite it: what a user needs from it is in docs/. The patterns are written with "~" for "§"
# and "^" for "." so that this file does not trip its own guard.
HANDBOOK = re.compile(
    "|".join(
        p.replace("~", "§").replace("^", r"\.")
        for p in (
            r"\bDESIGN\s*~",
            r"\breference\s*~",
            r"\bDESIGN^md\b",
            r"\bSTYLE^md\b",
            r"wecom-protocol^md",
            r"^^/shared/",
        )
    ),
    re.IGNORECASE,
)


def handbook_citations(name: str, text: str) -> list[str]:
    return [
        f"{name}:{number}: {line.strip()[:120]}"
        for number, line in enumerate(text.splitlines(), 1)
        if HANDBOOK.search(line)
    ]


@pytest.mark.parametrize(
    "line",
    [
        "defaults as in DESIGN ~3",
        "see Reference ~2.5.1",
        "the contract (DESIGN^md)",
        "STYLE^md says so",
        "reference/wecom-protocol^md",
        "open ^^/shared/notes",
    ],
)
def test_the_handbook_guard_catches_citations(line: str) -> None:
    assert handbook_citations("x", line.replace("~", "§").replace("^", "."))


@pytest.mark.parametrize(
    "line",
    ["the design of the worker", "see docs/reliability.md ~2", "a reference to the entry"],
)
def test_the_handbook_guard_leaves_prose_alone(line: str) -> None:
    assert not handbook_citations("x", line.replace("~", "§"))


@pytest.mark.parametrize(
    ("find", "what"),
    [
        (offending_lines, "absolute paths into a checkout or home folder"),
        (handbook_citations, "citations of a handbook users do not have"),
    ],
    ids=["no-checkout-or-home-path", "no-handbook-citation"],
)
def test_no_tracked_file_trips_a_guard(find: Callable[[str, str], list[str]], what: str) -> None:
    problems = tracked_problems(find)
    assert not problems, f"{what}:\n" + "\n".join(problems)
