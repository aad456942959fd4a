"""Smoke test of ``python -m bench.envelope``: it runs and measures what it says (no timings)."""

from __future__ import annotations

import pytest

from bench import envelope


def test_the_envelope_benchmark_measures_both_ways() -> None:
    result = envelope.measure("event.change_contact.update_tag", rounds=1, number=3)
    assert result["typed_us"] > 0 and result["whole_us"] > 0
    assert result["whole_bytes"] > result["typed_bytes"]  # the whole message travels too


def test_the_envelope_benchmark_prints_a_row_per_sample(capsys: pytest.CaptureFixture[str]) -> None:
    assert envelope.main(("text", "event.click"), rounds=1, number=2) == 0
    rows = capsys.readouterr().out.splitlines()
    assert [row.split()[0] for row in rows[1:]] == ["text", "event.click"]
