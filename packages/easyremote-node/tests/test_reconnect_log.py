"""A node that cannot reach its gateway says so at once, then at a bounded rate."""

from __future__ import annotations

import logging

import pytest

from easyremote.node import _reconnect_log
from easyremote.node._reconnect_log import ReconnectLog


def test_first_failure_warns_then_at_most_once_per_interval(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    now = [100.0]
    monkeypatch.setattr(_reconnect_log.time, "monotonic", lambda: now[0])
    log = ReconnectLog("gpu-1", "vps:8080", repeat_s=30.0)
    caplog.set_level(logging.INFO, logger="easyremote.node")

    for _ in range(50):  # fifty quick retries
        log.failed("Connection refused")
        now[0] += 0.5
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "gpu-1" in warnings[0] and "vps:8080" in warnings[0]
    assert "Connection refused" in warnings[0]

    now[0] += 10.0
    log.failed("UNAUTHENTICATED: missing or invalid EasyRemote token")
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2
    assert "after 51 attempts over 35 s" in warnings[1]
    assert "UNAUTHENTICATED" in warnings[1]

    log.registered(3)
    assert "after 51 failed attempt(s)" in caplog.records[-1].getMessage()
    assert log.failures == 0
    log.failed("Connection refused")  # a new streak warns at once again
    assert caplog.records[-1].levelno == logging.WARNING
