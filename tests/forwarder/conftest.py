"""Fixtures of the forwarder tests: started subprocesses, a fresh topic, a broker behind a proxy."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from forwarder.sinks.settings import CLIENT_LIBRARIES
from harness.broker import KafkaBroker, unique_topic
from harness.forwarder import ForwarderProcess, running_forwarders
from harness.net import free_port
from harness.proxy import FaultProxy, fault_proxy


@pytest.fixture
def forwarders() -> Iterator[list[ForwarderProcess]]:
    """Append each started forwarder: all are stopped when the test ends, whatever happened."""
    with running_forwarders() as started:
        yield started


@pytest.fixture(params=CLIENT_LIBRARIES)
def kafka_client(request: pytest.FixtureRequest) -> str:
    """Each Kafka client library in turn, as KAFKA_CLIENT names it: a test runs once with each."""
    client: str = request.param
    return client


@pytest.fixture
def topic() -> str:
    return unique_topic("forwarder")


@pytest.fixture
def proxied_broker() -> Iterator[tuple[KafkaBroker, FaultProxy]]:
    """A private broker every client reaches through a fault proxy: it advertises the proxy."""
    port = free_port()
    with fault_proxy(port) as proxy, KafkaBroker(port, advertised_port=proxy.port) as broker:
        yield broker, proxy
