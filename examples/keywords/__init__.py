"""Keyword auto-reply: rules from a TOML file, run as its own consumer group.

The behaviour lives in ``examples.keywords.router`` (``router``); see README.md here.
"""
