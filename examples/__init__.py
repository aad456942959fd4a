"""Worked examples of behaviours a team adds to wecom-bus (see docs/consumers.md)."""
