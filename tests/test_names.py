"""Every Redis key is built in shared/bus/names.py: this test fails when code builds one elsewhere.

It reads the source of the project's packages (not the tests, which spell keys out to check
their documented shape) and looks for the ways a key gets built: an f-string or concatenation
of a prefix, a stream or a key with ``:``, and a literal naming one of the key families.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from shared.bus import names

ROOT = Path(__file__).parent.parent
PACKAGES = ("shared", "services", "examples", "devkit")
NAMES = ROOT / "shared" / "bus" / "names.py"

FAMILIES = "events|outbox|deadletter|delayed|seen|sent|idem|token|token-lock|rate|circuit|retry"
PATTERNS = {
    # f"{prefix}:…", f"{self.prefix}:…", f"{settings.prefix}:…", f"{stream}:…"
    "f-string key": re.compile(r"""f["'][^"'\n]*\{[\w.]*(?:prefix|stream|key)\}:"""),
    # prefix + ":" …, ":".join((prefix, …))
    "concatenated key": re.compile(
        r"""(?:prefix|stream)\s*\+\s*["']:|["']:["']\.join\W*[\w.]*(?:prefix|stream)"""
    ),
    # "wecom:events", "…:rate:{app}…" written out
    "literal key": re.compile(rf"""["'][\w{{}}-]*:(?:{FAMILIES})(?::|["'])"""),
    # "%s:events" % prefix, "{}:outbox".format(prefix)
    "formatted key": re.compile(rf"""["'](?:%s|\{{\}}):(?:{FAMILIES})"""),
}


def sources() -> list[Path]:
    files = [p for pkg in PACKAGES if (ROOT / pkg).is_dir() for p in (ROOT / pkg).rglob("*.py")]
    return sorted(p for p in files if p != NAMES)


def offences(text: str) -> list[str]:
    found = []
    for n, line in enumerate(text.splitlines(), start=1):
        for what, pattern in PATTERNS.items():
            if pattern.search(line):
                found.append(f"{n}: {what}: {line.strip()}")
    return found


def test_no_key_is_built_outside_names_py() -> None:
    found = {
        str(path.relative_to(ROOT)): hits
        for path in sources()
        if (hits := offences(path.read_text(encoding="utf-8")))
    }
    assert found == {}


@pytest.mark.parametrize(
    "line",
    [
        'key = f"{prefix}:token:{corp}"',
        'return f"{self.prefix}:delayed:data"',
        'lock = settings.prefix + ":lock"',
        'await redis.get("wecom:events")',
        'k = "%s:outbox" % prefix',
        'retry = f"{stream}:retry:{group}"',
        'key = ":".join((settings.prefix, "seen", app))',
    ],
)
def test_the_scan_catches_each_way_of_building_a_key(line: str) -> None:
    assert offences(line)


def test_what_is_not_a_key_passes() -> None:
    assert offences('cmd.set_defaults(run=_lazy("services.tools:deadletter"))') == []
    assert offences('log.info("ready", extra={"prefix": prefix})') == []
    assert offences('key = ":".join(["evt", *head, *parts])') == []  # a part of a key, no prefix


def test_names_builds_each_documented_key() -> None:
    assert names.events("p") == "p:events"
    assert names.retry(names.events("p"), "g") == "p:events:retry:g"
    assert names.token("p", "ww", 7) == "p:token:{ww:7}"
    assert names.rate_user("p", "hr", "u") == "p:rate:{hr}:user:u"
    assert not hasattr(names, "health") and not hasattr(names, "health_pattern")
    documented = re.findall(r"^``(<[^`]+)``", names.__doc__ or "", re.M)
    assert len(documented) == len(set(documented)) >= 14
