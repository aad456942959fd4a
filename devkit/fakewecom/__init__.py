"""The fake WeCom: a real HTTP stand-in for qyapi.weixin.qq.com, WeCom's side of the callback,
and a browser chat page (docs/dev.md). Run it with ``wecom-bus fake-wecom``."""

from __future__ import annotations

from devkit.fakewecom.app import FakeWeCom, create_app
from devkit.fakewecom.state import DEFAULT_MEMBERS, FakeApp, FakeConfig, FakeState

__all__ = ["DEFAULT_MEMBERS", "FakeApp", "FakeConfig", "FakeState", "FakeWeCom", "create_app"]
