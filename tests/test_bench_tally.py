"""Smoke test of ``python -m bench.tally``: it runs and counts what it says (no timings)."""

from __future__ import annotations

import pytest

from bench import tally


def test_a_flush_sends_commands_per_field_not_per_callback() -> None:
    one = tally.flush_commands(apps=1, callbacks=4)
    assert one == tally.flush_commands(
        apps=1, callbacks=10_000
    )  # stored, ack_us, ack_n, 4 buckets, EXPIRE
    assert one == 8
    assert tally.flush_commands(apps=2, callbacks=10_000) == 15


def test_the_tally_benchmark_prints_its_figures(capsys: pytest.CaptureFixture[str]) -> None:
    assert tally.main(rounds=1, number=10) == 0
    out = capsys.readouterr().out
    assert "Tally.ack" in out and "Tally.add" in out and "commands in one pipeline" in out
