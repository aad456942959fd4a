"""Smoke test of ``python -m bench.tracing``: it runs and measures what it says (no timings)."""

from __future__ import annotations

import pytest

from bench import tracing as bench
from shared import tracing


def test_the_tracing_benchmark_measures_off_hooks_and_on() -> None:
    result = bench.measure(rounds=1, number=3)
    assert result["off_us"] > 0 and result["on_us"] > 0
    assert result["hooks_ns"] > 0 and result["plain_id_ns"] > 0
    assert not tracing.enabled()  # it turned tracing off again


def test_the_tracing_benchmark_prints_its_three_lines(capsys: pytest.CaptureFixture[str]) -> None:
    assert bench.main(rounds=1, number=2) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(",")[0].split(" ")[0] for line in lines] == ["ingress", "", "ingress"]
    assert "tracing off" in lines[0] and "tracing on" in lines[2]
