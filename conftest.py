"""Test-run wide settings for every package's tests and the integration tests."""

from __future__ import annotations

import os
import tempfile

import pytest


def pytest_configure(config: pytest.Config) -> None:
    # Gateways write their token file (and TLS pair) under EASYREMOTE_HOME;
    # tests use a fresh one per run, never the user's ~/.easyremote. Child
    # processes inherit it, so every role of a test finds the same tokens.
    if "EASYREMOTE_HOME" not in os.environ:
        home = tempfile.mkdtemp(prefix="easyremote-test-home-")
        os.chmod(home, 0o700)
        os.environ["EASYREMOTE_HOME"] = os.path.join(home, "home")
