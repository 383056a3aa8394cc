"""Fixtures every test module may use: the Kafka broker, shared per session or private per test."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.support.broker import KafkaBroker

EXTERNAL_KAFKA = "KAFKA_TEST_BOOTSTRAP_SERVERS"


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    """A running Kafka's bootstrap servers: $KAFKA_TEST_BOOTSTRAP_SERVERS, else an embedded one."""
    external = os.environ.get(EXTERNAL_KAFKA, "").strip()
    if external:
        yield external
        return
    with KafkaBroker() as broker:
        yield broker.bootstrap


@pytest.fixture
def kafka_broker() -> Iterator[KafkaBroker]:
    """A private embedded broker to stop and restart, even when an external Kafka is set."""
    with KafkaBroker() as broker:
        yield broker
