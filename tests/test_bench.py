"""Smoke tests of the benchmark harness: its pieces work and give sane figures (no time limits)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import msgspec
import pytest

from bench import procs
from bench.__main__ import main as bench_main
from bench.callbacks import (
    Credentials,
    callback_requests,
    content_index,
    load_requests,
    save_requests,
)
from bench.loadgen import LoadConfig, percentiles, run_load, wake_ups
from bench.profile import summarize
from bench.report import console, cpu_table, markdown, targets, topology_rows, wake_rows
from bench.tencent import VALIDATE_SIGNATURE_ERROR, WXBizMsgCryptLike
from shared.protocol.parser import parse_envelope
from tests.helpers import AES_KEY, CORP_ID, TOKEN, crypto, text_xml


@pytest.fixture
def requests_file(tmp_path: Path) -> Path:
    file = tmp_path / "requests.pkl"
    save_requests(callback_requests(Credentials.generate(), 300), file)
    return file


def test_tencent_style_crypto_decrypts_what_ours_builds() -> None:
    plaintext = text_xml("你好吗?")
    params, body = crypto().build_callback(
        plaintext, timestamp="1700000000", nonce="n1", agent_id=1
    )
    tencent = WXBizMsgCryptLike(TOKEN, AES_KEY, CORP_ID)
    ret, decrypted = tencent.DecryptMsg(
        body.decode(), params["msg_signature"], params["timestamp"], params["nonce"]
    )
    assert (ret, decrypted) == (0, plaintext)
    ret, _ = tencent.DecryptMsg(body.decode(), "0" * 40, params["timestamp"], params["nonce"])
    assert ret == VALIDATE_SIGNATURE_ERROR


def test_ours_decrypts_the_tencent_style_passive_reply() -> None:
    reply = "<xml><Content><![CDATA[回复]]></Content></xml>"
    ret, envelope = WXBizMsgCryptLike(TOKEN, AES_KEY, CORP_ID).EncryptMsg(reply, "n2", "1700000001")
    assert ret == 0
    root = ET.fromstring(envelope)
    encrypt = root.findtext("Encrypt")
    assert encrypt is not None
    ours = crypto()
    ours.verify(root.findtext("MsgSignature") or "", "1700000001", "n2", encrypt)
    assert ours.decrypt(encrypt) == reply.encode()


def test_tencent_style_verify_url_answers_the_echo() -> None:
    params = crypto().build_url_verification(b"echo-123", timestamp="1700000002", nonce="n3")
    tencent = WXBizMsgCryptLike(TOKEN, AES_KEY, CORP_ID)
    assert tencent.VerifyURL(
        params["msg_signature"], params["timestamp"], params["nonce"], params["echostr"]
    ) == (0, b"echo-123")


def test_prebuilt_callbacks_are_distinct_signed_requests(requests_file: Path) -> None:
    requests = load_requests(requests_file)
    assert len(requests) == len(set(requests)) == 300
    head, _, body = requests[7].partition(b"\r\n\r\n")
    assert head.startswith(b"POST /callback?msg_signature=")
    assert f"content-length: {len(body)}".encode() in head
    assert parse_envelope(body).encrypt
    assert content_index("bench 7") == 7 and content_index("hello") is None


def test_generator_against_the_bare_app_gives_sane_figures(
    requests_file: Path, tmp_path: Path
) -> None:
    env = dict(os.environ)
    with procs.server("bare", env, tmp_path, cpus=None) as srv:
        result = run_load(
            LoadConfig(
                port=srv.port,
                requests_file=str(requests_file),
                connections=4,
                warmup=0.2,
                duration=1.0,
                watch_pids=procs.tree(srv.process.pid),
            )
        )
    assert result.errors == 0
    assert result.completed > 0 and result.rps > 0
    assert set(result.statuses) == {"200"}
    assert 0 < result.latency_ms["p50"] <= result.latency_ms["p99"] <= result.latency_ms["max"]
    assert result.server_cpu_s > 0 and result.rps_per_cpu > 0


def test_open_loop_sends_each_request_once_on_schedule(requests_file: Path, tmp_path: Path) -> None:
    with procs.server("raw", dict(os.environ), tmp_path, cpus=None) as srv:
        before = time.time()
        result = run_load(
            LoadConfig(
                port=srv.port,
                requests_file=str(requests_file),
                mode="open",
                connections=4,
                rate=200.0,
                warmup=0.0,
                duration=0.5,
                repeat=False,
                record_sends=True,
                watch_pids=procs.tree(srv.process.pid),
            )
        )
    assert result.sent == 100 and result.errors == 0
    # Every answer counts, however late, and the server's CPU is read until the last one.
    assert result.completed == 100 and result.server_cpu_s > 0 and result.rps_per_cpu > 0
    assert result.send_times == sorted(result.send_times)
    assert before <= result.send_times[0] and result.send_times[-1] - result.send_times[0] < 5


def test_percentiles() -> None:
    stats = percentiles([i / 1000 for i in range(1, 101)])
    assert (stats["p50"], stats["p99"], stats["max"]) == (51.0, 100.0, 100.0)
    assert percentiles([])["p99"] == 0.0


def test_profile_summary_shares() -> None:
    collapsed = (
        "main (a.py);receive (/x/services/ingress/callback.py);"
        "decrypt (/x/shared/protocol/c.py) 3\n"
        "main (a.py);other (/usr/lib/python3.11/asyncio/events.py) 1\n"
    )
    report = summarize(collapsed)
    assert report["samples"] == 4
    assert ("decrypt (shared/protocol/c.py)", 75.0) in report["self_top"]
    assert ("receive (services/ingress/callback.py)", 75.0) in report["inclusive_top"]


def test_profile_without_py_spy_says_how_to_install_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """No bench extra: one line and exit code 2 at once, not a traceback from a spy thread."""
    (tmp_path / "bin").mkdir()
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))  # no py-spy on PATH…
    monkeypatch.setattr("sys.executable", str(tmp_path / "bin" / "python"))  # …nor beside us
    out = tmp_path / "profile.json"
    for target in ("ingress", "e2e"):
        assert bench_main(["profile", "--target", target, "--out", str(out)]) == 2
        captured = capsys.readouterr()
        assert captured.out == "" and len(captured.err.splitlines()) == 1
        assert "make bench" in captured.err and "pip install -e '.[bench]'" in captured.err
    assert not out.exists()


def test_report_says_what_was_not_measured() -> None:
    results = {"mode": "quick", "machine": {"nproc": 2}, "seconds": 1.0}
    rows = targets(results)
    assert rows and all(measured == "not measured" and ok is None for _, _, measured, ok in rows)
    assert "Goals" in console(results)


def test_the_asgi_baseline_verifies_and_decrypts(tmp_path: Path) -> None:
    creds = Credentials.generate()
    good = tmp_path / "good.pkl"
    save_requests(callback_requests(creds, 20), good)
    forged = tmp_path / "forged.pkl"  # signed with another app's Token: refused
    save_requests(callback_requests(Credentials.generate(), 20), forged)
    env = {**os.environ, **creds.env()}
    with procs.server("asgi", env, tmp_path, cpus=None) as srv:
        config = LoadConfig(port=srv.port, requests_file=str(good), connections=2, warmup=0.0)
        ok = run_load(msgspec.structs.replace(config, duration=0.3))
        refused = run_load(msgspec.structs.replace(config, duration=0.3, requests_file=str(forged)))
    assert ok.completed > 0 and set(ok.statuses) == {"200"}
    # only 200s count: a receiver that refuses everything carries nothing
    assert refused.completed == 0 and refused.rps == 0 and set(refused.statuses) == {"403"}


def test_cpu_table_is_in_units_of_the_baseline() -> None:
    run = {
        "rate": 500,
        "sustained": True,
        "latency_ms": {"p50": 5.0, "p99": 20.0},
        "cpu_ms_per_message": {
            "ingress": 0.2,
            "responder": 0.1,
            "sender": 0.4,
            "redis": 0.1,
            "fake-wecom": 0.3,
        },
    }
    results = {"pipeline": {"baseline_cpu_ms": 0.1, "e2e": {"rates": [run]}}}
    table = dict(cpu_table(results))
    [(e2e_ms, e2e_ratio)], [(sender_ms, sender_ratio)] = table["end to end"], table["sender"]
    assert round(e2e_ms, 6) == 0.8 and e2e_ratio is not None  # the fake is not counted
    assert round(e2e_ratio, 6) == 8.0
    assert sender_ms == 0.4 and sender_ratio is not None and round(sender_ratio, 6) == 4.0
    rows = {what: (measured, ok) for what, _, measured, ok in targets(results)}
    assert rows["end-to-end CPU per message at 500/s"] == ("0.800 ms (8.0×)", False)
    assert rows["responder CPU per event at 500/s"] == ("0.100 ms (1.0×)", True)


def test_cpu_at_a_rate_is_in_units_of_the_baseline_at_that_rate() -> None:
    run = {
        "rate": 1000,
        "sustained": True,
        "latency_ms": {"p50": 5.0, "p99": 20.0},
        "cpu_ms_per_message": {"ingress": 0.3, "responder": 0.2, "sender": 0.5, "redis": 0.2},
    }
    pipeline = {"baseline_cpu_ms": 0.1, "baseline_at_rate_cpu_ms": {"1000": 0.2}}
    results = {"pipeline": {**pipeline, "e2e": {"rates": [run]}}}
    table = dict(cpu_table(results))
    [(e2e_ms, e2e_ratio)] = table["end to end"]
    assert e2e_ms == pytest.approx(1.2) and e2e_ratio == pytest.approx(6.0)
    assert table["baseline"] == [(0.2, 1.0)]
    rows = {what: (measured, ok) for what, _, measured, ok in targets(results)}
    # the goal is judged in the same-rate unit; the peak's ratio is shown beside it
    assert rows["end-to-end CPU per message at 1000/s"] == ("1.200 ms (6.0×; 12.0× peak)", True)
    # a run that left a backlog meets no CPU goal: queued messages share round trips
    run["sustained"] = False
    rows = {what: (measured, ok) for what, _, measured, ok in targets(results)}
    measured, ok = rows["end-to-end CPU per message at 1000/s"]
    assert measured.endswith(", not sustained") and ok is False
    assert "| baseline | 0.200 ms (1.0×) |" in markdown(results)


def test_wake_ups_count_each_time_a_process_slept_and_was_woken() -> None:
    """A child that sleeps 50 times is woken at least 50 times; one that spins, hardly."""
    script = (
        "import sys, time\n"
        "print('ready', flush=True); sys.stdin.readline()\n"
        "if sys.argv[1] == 'sleep':\n"
        "    for _ in range(50): time.sleep(0.002)\n"
        "else:\n"
        "    end = time.perf_counter() + 0.1\n"
        "    while time.perf_counter() < end: pass\n"
        "print('done', flush=True); sys.stdin.readline()\n"
    )
    woken = {}
    for kind in ("sleep", "spin"):
        argv = [sys.executable, "-c", script, kind]
        with subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE) as child:
            assert child.stdin is not None and child.stdout is not None
            assert child.stdout.readline() == b"ready\n"
            before = wake_ups([child.pid])
            child.stdin.write(b"go\n")
            child.stdin.flush()
            assert child.stdout.readline() == b"done\n"
            woken[kind] = wake_ups([child.pid]) - before
            child.kill()
    assert woken["sleep"] >= 50
    assert woken["spin"] < 10
    assert wake_ups([2**22 + 12345]) == 0  # a process that is gone counts nothing


def test_wake_ups_per_message_are_reported_per_process_and_rate() -> None:
    run = {
        "rate": 100,
        "sustained": True,
        "latency_ms": {"p50": 5.0, "p99": 20.0},
        "cpu_ms_per_message": {"ingress": 1.0, "responder": 1.0, "sender": 1.5, "redis": 0.8},
        "wakeups_per_message": {"ingress": 1.41, "responder": 1.35, "sender": 4.29, "redis": 5.4},
    }
    results = {"pipeline": {"baseline_cpu_ms": 0.1, "e2e": {"rates": [run]}}}
    assert wake_rows(results) == [(100, "1.4 / 1.4 / 4.3 / 5.4")]
    assert (
        "| wake-ups per message (ingress / responder / sender / Redis) | 1.4 / 1.4 / 4.3 / 5.4 |"
        in markdown(results)
    )
    del run["wakeups_per_message"]  # results saved before it was measured
    assert wake_rows(results) == [] and "wake-ups" not in markdown(results)


def test_topology_rows_say_what_each_case_delivered_and_cost() -> None:
    run = {
        "sent": 1200,
        "delivered": 1199,
        "duplicates": 0,
        "other_requests": 3,
        "delivered_per_s": 290.4,
        "sustained": False,
        "latency_ms": {"p50": 12.0, "p99": 80.0},
        "end_to_end_cpu_ms": 0.8,
        "cpu_ms_per_message": {"ingress": 0.2, "redis": 0.25},
        "redis_per_message": {"reads": 4.04, "commands": 44.0},
    }
    ingress = {"rps": 1900.0, "latency_ms": {"p50": 14.0, "p99": 50.0}}
    results = {
        "pipeline": {"baseline_cpu_ms": 0.1},
        "topology": {
            "ingress": {"cluster, 8 partitions": ingress},
            "e2e": {"rate": 300, "seconds": 4.0, "runs": {"cluster, 8 partitions": run}},
        },
    }
    [row] = topology_rows(results)
    assert row == (
        "cluster, 8 partitions",
        "1900, 14.0 / 50.0",
        "290",
        "12.0 / 80.0",
        "no",
        "0.800 ms (8.0×), Redis 0.250 ms, 4.0 Redis reads",
        "1199 of 1200, 0 twice, 3 resent (WeCom's duplicate check)",
    )
    assert "| cluster, 8 partitions | 1900, 14.0 / 50.0 | 290 |" in markdown(results)
    assert "end to end at 300 msg/s" in console({"topology": results["topology"]})
    assert topology_rows({}) == []
