"""Fixtures for the deployment checks (deploy/, docker-compose.yml, Dockerfile)."""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from deploy_checks import COMPOSE_FILE, ExportedMetrics, exported_metrics, interpolate


@pytest.fixture(scope="session")
def exported() -> ExportedMetrics:
    """Series names the real metric classes export (each built on a fresh CollectorRegistry)."""
    return exported_metrics()


@pytest.fixture(scope="session")
def compose_text() -> str:
    return COMPOSE_FILE.read_text(encoding="utf-8")


@pytest.fixture(scope="session")
def compose(compose_text: str) -> dict[str, Any]:
    """docker-compose.yml as compose reads it: variables interpolated (defaults, or a placeholder)."""
    loaded: dict[str, Any] = yaml.safe_load(interpolate(compose_text))
    return loaded
