"""Greets members by name and department; describes the images they send (docs/gateway.md)."""
