"""What the console's per-minute counters cost the services: ``python -m bench.tally``.

A microbenchmark of the in-memory side (what the ingress does per stored callback,
``Tally.ack``, and the sender per send, ``Tally.add``) and of what one flush sends to Redis:
how many commands, for a given number of apps, however many callbacks were counted. Figures are
the best of 25 rounds of CPU time (``process_time``); compare ``python -m bench.envelope`` for
the ingress's whole per-callback work.
"""

from __future__ import annotations

import time
import timeit

from shared.bus.tally import Tally

__all__ = ["flush_commands", "main", "measure"]


def measure(rounds: int = 25, number: int = 20_000) -> dict[str, float]:
    """µs per ``ack`` (ingress) and per ``add`` (sender)."""
    ingress, sender = Tally("callbacks"), Tally("sends")
    calls = {
        "ack_us": lambda: ingress.ack("default", "stored", 0.0012),
        "add_us": lambda: sender.add("default", "0"),
    }
    return {
        name: min(timeit.repeat(call, number=number, repeat=rounds, timer=time.process_time))
        / number
        * 1e6
        for name, call in calls.items()
    }


def flush_commands(apps: int, callbacks: int) -> int:
    """Commands one flush sends after ``callbacks`` callbacks spread over ``apps`` apps (one
    minute; latencies over four buckets): HINCRBY per changed field plus one EXPIRE."""
    counts = Tally("callbacks", clock=lambda: 1_800_000_000.0)
    for i in range(callbacks):
        counts.ack(f"app{i % apps}", "stored", (0.0005, 0.0015, 0.004, 0.02)[i // apps % 4])
    return len(counts) + 1


def main(rounds: int = 25, number: int = 20_000) -> int:
    r = measure(rounds, number)
    print(f"ingress, per stored callback (Tally.ack): {r['ack_us']:.2f} µs CPU, 0 Redis commands")
    print(f"sender, per send (Tally.add):             {r['add_us']:.2f} µs CPU, 0 Redis commands")
    for apps, n in ((1, 1), (1, 10_000), (5, 10_000)):
        print(f"one flush (every 5 s) after {n:>6} callbacks of {apps} app(s): "
              f"{flush_commands(apps, n)} commands in one pipeline")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
