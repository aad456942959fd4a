"""wecom-bus: WeCom self-built app services on Redis Streams."""

__version__ = "0.1.0"
