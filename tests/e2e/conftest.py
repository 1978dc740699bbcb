"""Fixtures for the end-to-end tests (real servers, browsers, command-line front ends)."""

from __future__ import annotations

import pytest

from e2e.support import ARTIFACTS, SCREENSHOTS


@pytest.fixture(scope="session")
def screenshots():
    """test-artifacts/screenshots/: the folder CI keeps."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    return SCREENSHOTS


@pytest.fixture(scope="session")
def artifacts():
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS
