"""The Kafka sinks: the seed's record format, and delivery against the embedded broker.

Tests of behaviour run once per client library (KAFKA_CLIENT); those of one library's own
configuration, error classes or internals name it.
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException
from kafka import errors as kafka_errors
from structlog.testing import capture_logs

from emitter.contract import Envelope, decode_envelope, encode_envelope
from forwarder.errors import PermanentSinkError, RetriableSinkError
from forwarder.record import kafka_value
from forwarder.settings import Settings
from forwarder.sinks import build_sinks, kafka, kafka_confluent
from forwarder.sinks.kafka import KafkaSink, producer_config
from forwarder.sinks.kafka_confluent import ConfluentKafkaSink
from forwarder.sinks.settings import KafkaSettings
from harness import events
from harness.broker import consume, unique_topic

SEED_FIELDS = ["event_type", "timestamp", "user_id", "source", "version", "data"]
FIELDS = [*SEED_FIELDS, "event_id", "topic"]
TS = 1769682645123456789
"""2026-01-29T10:30:45.123456789Z"""
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
OUTAGE_BOUND_S = 20
"""Far above the bounded waits, far below the library's own (30 s bootstrap, 60 s metadata)."""
SINKS = {"kafka-python": KafkaSink, "confluent": ConfluentKafkaSink}
SECURED = KafkaSettings(
    security_protocol="SASL_SSL",
    sasl_mechanism="SCRAM-SHA-512",
    sasl_username="forwarder",
    sasl_password="s3cret-password",
    ssl_cafile="/etc/ssl/ca.pem",
)
TOO_LARGE = {"kafka-python": "MessageSizeTooLargeError", "confluent": "MSG_SIZE_TOO_LARGE"}


def make_envelope(n: int, user: str | None = "user123", **fields: Any) -> Envelope:
    """Order `n` of `user` at a known time; a system event for no user."""
    return events.envelope(
        "order_event" if user else "master_contract_download",
        {"symbol": "SBIN", "action": "BUY", "orderid": str(n), "mode": "live"},
        **{
            "id": f"evt-{n}",
            "ts": TS + n * 1_000_003,
            "topic": "order.placed" if user else None,
            "user_id": user,
            **fields,
        },
    )


def confluent_error(code: int, **flags: bool) -> KafkaException:
    return KafkaException(KafkaError(code, **flags))


@pytest.fixture
def make_sink(kafka_client):
    sinks: list[KafkaSink | ConfluentKafkaSink] = []

    def make(bootstrap: str, topic: str, **overrides: Any) -> KafkaSink | ConfluentKafkaSink:
        servers = tuple(bootstrap.split(","))
        settings = KafkaSettings(
            client=kafka_client, bootstrap_servers=servers, topic=topic, **overrides
        )
        sink = SINKS[kafka_client](settings)
        sinks.append(sink)
        return sink

    yield make
    for sink in sinks:
        sink.close()


def header(record: Any, name: str) -> str:
    return dict(record.headers)[name].decode()


class TestKafkaValue:
    def test_seed_record_bytes(self):
        """An order event becomes the seed's JSON object, fields in its order, then id and topic."""
        envelope = make_envelope(0, id="evt-1")

        assert kafka_value(envelope) == (
            b'{"event_type":"order_event","timestamp":"2026-01-29T10:30:45.123456Z",'
            b'"user_id":"user123","source":"openalgo","version":"1.0",'
            b'"data":{"symbol":"SBIN","action":"BUY","orderid":"0","mode":"live"},'
            b'"event_id":"evt-1","topic":"order.placed"}'
        )

    def test_an_event_from_no_bus_topic_has_a_null_topic(self):
        """Events of the seed's methods and direct emits say so with `topic: null`."""
        value = json.loads(kafka_value(make_envelope(0, user=None)))

        assert value["topic"] is None
        assert list(value) == FIELDS

    def test_data_is_the_browser_payload_followed_by_the_other_fields(self):
        """Kafka's data is the whole event: browser fields first, then the ones it leaves out."""
        envelope = make_envelope(0, extra={"quantity": 10, "request_data": {"symbol": "SBIN"}})

        data = json.loads(kafka_value(envelope))["data"]

        assert list(data.items()) == [
            *envelope.data.items(),
            ("quantity", 10),
            ("request_data", {"symbol": "SBIN"}),
        ]

    def test_on_a_name_clash_the_browser_value_is_kept(self):
        """A field in both keeps the browser's value and its place: consumers see what it showed."""
        envelope = make_envelope(0, data={"symbol": "Split"}, extra={"symbol": "", "total": 4})

        data = json.loads(kafka_value(envelope))["data"]

        assert list(data.items()) == [("symbol", "Split"), ("total", 4)]

    def test_system_event_user_is_admin(self):
        """An event that belongs to no user names `admin` as its user, as the seed did."""
        value = json.loads(kafka_value(make_envelope(0, user=None)))

        assert value["user_id"] == "admin"
        assert value["event_type"] == "master_contract_download"

    @pytest.mark.parametrize(
        ("nanoseconds", "fraction"),
        [(0, "000000"), (999, "000000"), (1_000, "000001"), (999_999_999, "999999")],
    )
    def test_timestamp_has_six_fractional_digits(self, nanoseconds, fraction):
        """The timestamp has six fractional digits, nanoseconds cut, even on a whole second."""
        envelope = make_envelope(0, ts=1769682645 * 10**9 + nanoseconds)

        timestamp = json.loads(kafka_value(envelope))["timestamp"]

        assert timestamp == f"2026-01-29T10:30:45.{fraction}Z"

    def test_msgpack_datetime_and_bytes_are_written(self):
        """Datetimes and bytes that msgpack decoding yields become RFC 3339 text and base64."""
        moment = datetime(2026, 1, 29, 10, 30, 45, 123456, tzinfo=UTC)
        sent = make_envelope(0, data={"at": moment, "raw": b"\x00\xff", "n": [1, 2.5, None]})
        received = decode_envelope(encode_envelope(sent))

        data = json.loads(kafka_value(received))["data"]

        assert data == {"at": "2026-01-29T10:30:45.123456Z", "raw": "AP8=", "n": [1, 2.5, None]}

    def test_keys_json_cannot_hold_raise(self):
        """A mapping keyed by a tuple has no JSON form, so encoding refuses it."""
        with pytest.raises(TypeError):
            kafka_value(make_envelope(0, data={"legs": {(1, 2): "x"}}))


class TestProducerConfig:
    @pytest.mark.parametrize(
        ("acks", "retries", "client_acks", "idempotent", "in_flight"),
        [
            ("all", 3, "all", True, 5),
            ("all", 0, "all", False, 1),
            ("1", 3, 1, False, 1),
            ("0", 3, 0, False, 1),
        ],
    )
    def test_idempotence_only_with_acks_all(
        self, acks, retries, client_acks, idempotent, in_flight
    ):
        """The idempotent producer is used where it can be; without it one request is in flight."""
        config = producer_config(KafkaSettings(acks=acks, retries=retries))

        assert config["acks"] == client_acks
        assert config["enable_idempotence"] is idempotent
        assert config["max_in_flight_requests_per_connection"] == in_flight

    def test_waits_are_bounded_by_the_settings(self):
        """No library wait outlasts the request timeout; records expire in the client only after
        the forwarder gave up on every batch in flight, 2,007 ms each, plus 5 s."""
        config = producer_config(
            KafkaSettings(request_timeout_ms=2000, linger_ms=7, batches_in_flight=4)
        )

        assert config["max_block_ms"] <= 2000
        assert config["bootstrap_timeout_ms"] <= 2000
        assert config["delivery_timeout_ms"] == 5 * 2007 + 5000

    def test_secured_cluster_settings_pass_through(self):
        """SASL and TLS settings reach the client only when set."""
        plain = producer_config(KafkaSettings(compression="none"))
        secured = producer_config(SECURED)

        assert plain["compression_type"] is None
        assert not [name for name in plain if name.startswith(("sasl_", "ssl_"))]
        assert secured["security_protocol"] == "SASL_SSL"
        assert secured["sasl_mechanism"] == "SCRAM-SHA-512"
        assert secured["sasl_plain_username"] == "forwarder"
        assert secured["sasl_plain_password"] == "s3cret-password"
        assert secured["ssl_cafile"] == "/etc/ssl/ca.pem"
        assert "ssl_keyfile" not in secured


class TestConfluentProducerConfig:
    def test_librdkafka_debugging_only_with_log_wire(self):
        """librdkafka's protocol debugging is a wire log: on with LOG_WIRE=1 alone."""
        assert "debug" not in kafka_confluent.producer_config(KafkaSettings())
        wired = kafka_confluent.producer_config(KafkaSettings(wire_debug=True))
        assert wired["debug"] == "broker,protocol,security"

    @pytest.mark.parametrize(
        ("acks", "retries", "idempotent", "in_flight"),
        [("all", 3, True, 5), ("all", 0, False, 1), ("1", 3, False, 1), ("0", 3, False, 1)],
    )
    def test_idempotence_only_with_acks_all(self, acks, retries, idempotent, in_flight):
        """librdkafka is idempotent exactly when kafka-python is; else one request in flight."""
        config = kafka_confluent.producer_config(KafkaSettings(acks=acks, retries=retries))

        assert config["acks"] == acks
        assert config["enable.idempotence"] is idempotent
        assert config["max.in.flight.requests.per.connection"] == in_flight

    def test_settings_map_to_librdkafka_names(self):
        """Batching, timeouts and client id keep their meaning; records expire in the client only
        after the forwarder gave up on both batches in flight: 2,007 ms each, 2,007 more, 5 s."""
        config = kafka_confluent.producer_config(
            KafkaSettings(
                bootstrap_servers=("a:9092", "b:9092"),
                batch_size=65536,
                linger_ms=7,
                request_timeout_ms=2000,
                batches_in_flight=2,
                client_id="fwd",
            )
        )

        assert config["bootstrap.servers"] == "a:9092,b:9092"
        assert (config["batch.size"], config["linger.ms"]) == (65536, 7)
        assert config["request.timeout.ms"] == 2000
        assert config["message.timeout.ms"] == 3 * 2007 + 5000
        assert config["client.id"] == "fwd"

    def test_secured_cluster_settings_pass_through(self):
        """SASL and TLS settings reach librdkafka under its names, only when set."""
        plain = kafka_confluent.producer_config(KafkaSettings(compression="none"))
        secured = kafka_confluent.producer_config(SECURED)

        assert plain["compression.type"] == "none"
        assert not [name for name in plain if name.startswith(("sasl.", "ssl."))]
        assert secured["security.protocol"] == "sasl_ssl"
        assert secured["sasl.mechanism"] == "SCRAM-SHA-512"
        assert secured["sasl.username"] == "forwarder"
        assert secured["sasl.password"] == "s3cret-password"
        assert secured["ssl.ca.location"] == "/etc/ssl/ca.pem"
        assert "ssl.key.location" not in secured


class TestBuildSinks:
    def test_kafka_client_picks_the_library(self, kafka_client):
        """KAFKA_CLIENT picks the library; the sink is named kafka either way, in logs and stats."""
        settings = Settings(modes=("KAFKA",), sinks={"KAFKA": KafkaSettings(client=kafka_client)})

        [sink] = build_sinks(settings)

        with sink:
            assert type(sink) is SINKS[kafka_client]
            assert sink.name == "kafka"


class TestTranslateError:
    @pytest.mark.parametrize(
        ("translate", "exc"),
        [
            (kafka.translate_error, kafka_errors.KafkaTimeoutError("Expiring 3 record(s)")),
            (kafka.translate_error, kafka_errors.KafkaConnectionError("connection refused")),
            (kafka.translate_error, kafka_errors.NotLeaderForPartitionError()),
            (kafka.translate_error, kafka_errors.UnknownProducerIdError()),
            (kafka.translate_error, kafka_errors.OutOfOrderSequenceNumberError()),
            (
                kafka.translate_error,
                kafka_errors.IllegalStateError("Producer is closed."),
            ),
            (kafka.translate_error, ConnectionResetError("reset by peer")),
            (kafka_confluent.translate_error, confluent_error(KafkaError._MSG_TIMED_OUT)),
            (kafka_confluent.translate_error, confluent_error(KafkaError._TRANSPORT)),
            (kafka_confluent.translate_error, confluent_error(KafkaError.NOT_LEADER_FOR_PARTITION)),
            (kafka_confluent.translate_error, confluent_error(KafkaError.UNKNOWN_PRODUCER_ID)),
            (
                kafka_confluent.translate_error,
                confluent_error(KafkaError.OUT_OF_ORDER_SEQUENCE_NUMBER),
            ),
            (kafka_confluent.translate_error, confluent_error(KafkaError._FATAL, fatal=True)),
            (kafka_confluent.translate_error, BufferError("Local: Queue full")),
            (kafka_confluent.translate_error, ConnectionResetError("reset by peer")),
        ],
    )
    def test_transient_failures_are_retriable(self, translate, exc):
        """Timeouts, lost connections and a producer the broker forgot may succeed on a new try."""
        error = translate(exc)

        assert isinstance(error, RetriableSinkError)
        assert error.__cause__ is exc

    @pytest.mark.parametrize(
        ("translate", "exc"),
        [
            (kafka.translate_error, kafka_errors.MessageSizeTooLargeError("The message is 2 MB")),
            (kafka.translate_error, kafka_errors.RecordListTooLargeError()),
            (kafka.translate_error, kafka_errors.TopicAuthorizationFailedError("from_openalgo")),
            (kafka.translate_error, kafka_errors.ClusterAuthorizationFailedError()),
            (kafka.translate_error, kafka_errors.InvalidTopicError()),
            (kafka.translate_error, kafka_errors.UnsupportedVersionError()),
            (kafka.translate_error, ValueError("topic name is invalid")),
            (kafka_confluent.translate_error, confluent_error(KafkaError.MSG_SIZE_TOO_LARGE)),
            (kafka_confluent.translate_error, confluent_error(KafkaError.RECORD_LIST_TOO_LARGE)),
            (
                kafka_confluent.translate_error,
                confluent_error(KafkaError.TOPIC_AUTHORIZATION_FAILED),
            ),
            (
                kafka_confluent.translate_error,
                confluent_error(KafkaError.CLUSTER_AUTHORIZATION_FAILED),
            ),
            (kafka_confluent.translate_error, confluent_error(KafkaError.TOPIC_EXCEPTION)),
            (kafka_confluent.translate_error, confluent_error(KafkaError.UNSUPPORTED_VERSION)),
            (kafka_confluent.translate_error, ValueError("topic name is invalid")),
        ],
    )
    def test_refusals_are_permanent_with_the_reason(self, translate, exc):
        """Too large, not authorised, invalid topic: the error says so and retrying cannot help."""
        error = translate(exc)

        assert isinstance(error, PermanentSinkError)
        reason = exc.args[0].str() if isinstance(exc, KafkaException) else str(exc)
        assert reason in str(error)
        assert error.__cause__ is exc

    def test_a_timeout_names_the_client_error_behind_it(self):
        """librdkafka's timeout alone says nothing; its last error report says what went wrong."""
        refused = KafkaError(KafkaError._TRANSPORT, "127.0.0.1:9/bootstrap: Connection refused")

        error = kafka_confluent.translate_error(confluent_error(KafkaError._MSG_TIMED_OUT), refused)

        assert str(error).startswith("_MSG_TIMED_OUT: ")
        assert str(error).endswith("(last client error: 127.0.0.1:9/bootstrap: Connection refused)")


@pytest.mark.integration
class TestKafkaSinkDeliver:
    def test_batch_arrives_once_exactly(self, kafka_bootstrap, make_sink):
        """Each event arrives once: the seed's value, the user as key, headers, in order per key."""
        topic = unique_topic()
        users = ["alice", "bob", "carol", None]
        batch = [make_envelope(n, user=users[n % 4]) for n in range(20)]
        sent = {envelope.id: envelope for envelope in batch}

        delivery = make_sink(kafka_bootstrap, topic).deliver(batch)
        records = consume(kafka_bootstrap, topic, len(batch))

        assert not delivery.failed
        assert sorted(header(r, "event_id") for r in records) == sorted(sent)
        for record in records:
            envelope = sent[header(record, "event_id")]
            value = json.loads(record.value)
            assert record.value == kafka_value(envelope)
            assert list(value) == FIELDS
            assert value["data"] == envelope.data
            assert value["topic"] == envelope.topic
            timestamp = datetime.fromisoformat(value["timestamp"].replace("Z", "+00:00"))
            assert timestamp == EPOCH + timedelta(microseconds=envelope.ts // 1000)
            assert record.key == (envelope.user_id or "admin").encode()
            assert record.headers == [
                ("event_type", envelope.event.encode()),
                ("event_id", envelope.id.encode()),
                *([] if envelope.topic is None else [("topic", envelope.topic.encode())]),
            ]
        received_by_key = defaultdict(list)
        for record in sorted(records, key=lambda r: (r.partition, r.offset)):
            received_by_key[record.key.decode()].append(header(record, "event_id"))
        sent_by_key = defaultdict(list)
        for envelope in batch:
            sent_by_key[envelope.key].append(envelope.id)
        assert received_by_key == sent_by_key

    @pytest.mark.parametrize("compression", ["none", "gzip", "snappy", "lz4", "zstd"])
    def test_each_compression_round_trips(self, kafka_bootstrap, make_sink, compression):
        """Records compressed with any supported codec read back byte for byte."""
        topic = unique_topic()
        batch = [make_envelope(n) for n in range(3)]

        delivery = make_sink(kafka_bootstrap, topic, compression=compression).deliver(batch)
        records = consume(kafka_bootstrap, topic, len(batch))

        assert not delivery.failed
        assert [r.value for r in records] == [kafka_value(envelope) for envelope in batch]

    @pytest.mark.parametrize("acks", ["0", "1", "all"])
    def test_each_acks_setting_delivers(self, kafka_bootstrap, make_sink, acks):
        """Every acks setting the seed allows reaches the topic."""
        topic = unique_topic()
        batch = [make_envelope(n) for n in range(3)]

        delivery = make_sink(kafka_bootstrap, topic, acks=acks).deliver(batch)
        records = consume(kafka_bootstrap, topic, len(batch))

        assert not delivery.failed
        assert [header(r, "event_id") for r in records] == [e.id for e in batch]

    def test_refused_records_fail_alone(self, kafka_bootstrap, make_sink, kafka_client):
        """A record too large or not writable as JSON fails permanently; the rest are delivered."""
        topic = unique_topic()
        batch = [
            make_envelope(0),
            make_envelope(1, data={"blob": "x" * (2 * 1024 * 1024)}),
            make_envelope(2, data={"legs": {(1, 2): "x"}}),
            make_envelope(3),
        ]

        delivery = make_sink(kafka_bootstrap, topic).deliver(batch)
        records = consume(kafka_bootstrap, topic, 2)

        assert sorted(delivery.failed) == [1, 2]
        assert all(isinstance(e, PermanentSinkError) for e in delivery.failed.values())
        assert TOO_LARGE[kafka_client] in str(delivery.failed[1])
        assert "JSON" in str(delivery.failed[2])
        assert [header(r, "event_id") for r in records] == ["evt-0", "evt-3"]


@pytest.mark.integration
class TestKafkaSinkOutage:
    @pytest.mark.parametrize("kafka_client", ["kafka-python"])
    def test_unreachable_broker_is_retriable_without_long_block(self, kafka_broker, make_sink):
        """With no broker, kafka-python's constructor fails retriably long before its own 30 s."""
        kafka_broker.stop()
        sink = make_sink(kafka_broker.bootstrap, unique_topic())

        started = time.monotonic()
        with pytest.raises(RetriableSinkError, match=kafka_broker.bootstrap):
            sink.deliver([make_envelope(0)])

        assert time.monotonic() - started < OUTAGE_BOUND_S

    @pytest.mark.parametrize("kafka_client", ["confluent"])
    def test_no_broker_at_start_fails_within_the_request_timeout(self, kafka_broker, make_sink):
        """librdkafka's constructor does not wait for a broker: the records time out, naming it."""
        kafka_broker.stop()
        sink = make_sink(kafka_broker.bootstrap, unique_topic(), request_timeout_ms=2000)

        started = time.monotonic()
        failed = sink.deliver([make_envelope(0), make_envelope(1)]).failed

        assert time.monotonic() - started < OUTAGE_BOUND_S
        assert sorted(failed) == [0, 1]
        assert all(isinstance(e, RetriableSinkError) for e in failed.values())
        assert kafka_broker.bootstrap in str(failed[0])

    def test_outage_fails_every_event_then_a_new_producer_delivers(self, kafka_broker, make_sink):
        """Events sent while the broker is gone fail retriably; once it is back they arrive."""
        topic = unique_topic()
        sink = make_sink(kafka_broker.bootstrap, topic, request_timeout_ms=2000)
        assert not sink.deliver([make_envelope(0)]).failed
        batch = [make_envelope(n) for n in range(1, 4)]
        kafka_broker.stop()

        started = time.monotonic()
        try:
            failed = sink.deliver(batch).failed
        except RetriableSinkError as exc:
            failed = dict.fromkeys(range(len(batch)), exc)

        assert time.monotonic() - started < OUTAGE_BOUND_S
        assert sorted(failed) == [0, 1, 2]
        assert all(isinstance(e, RetriableSinkError) for e in failed.values())

        kafka_broker.restart()
        with capture_logs() as logs:
            delivery = sink.deliver(batch)

        assert not delivery.failed
        assert [log["event"] for log in logs] == ["producer_created"]
        records = consume(kafka_broker.bootstrap, topic, len(batch))
        assert [header(r, "event_id") for r in records] == [e.id for e in batch]


@pytest.mark.integration
class TestKafkaSinkCheck:
    def test_reachable_cluster_is_described(self, kafka_bootstrap, make_sink):
        """check() reaches the cluster and names the topic and its partitions."""
        topic = unique_topic()

        description = make_sink(kafka_bootstrap, topic).check()

        assert topic in description
        assert "partition" in description

    def test_unreachable_cluster_is_retriable(self, kafka_broker, make_sink):
        """check() against a stopped broker raises a retriable error naming the address."""
        kafka_broker.stop()
        sink = make_sink(kafka_broker.bootstrap, unique_topic(), request_timeout_ms=2000)

        started = time.monotonic()
        with pytest.raises(RetriableSinkError, match=kafka_broker.bootstrap):
            sink.check()

        assert time.monotonic() - started < OUTAGE_BOUND_S
