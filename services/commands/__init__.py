"""The operator commands of ``wecom-bus``, one module per command group.

Each module parses what ``services.cli`` collected and prints; the work itself is done by the
libraries (``shared.bus.outbox``, ``shared.bus.deadletter``, ``shared.wecom``). ``run(args)`` in
each module is the command's entry point and returns its exit code.
"""
