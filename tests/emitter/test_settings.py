"""The emitter's limits: strict for `check`, lenient inside the app, described in one line."""

from __future__ import annotations

import pytest

from emitter.config import ConfigError
from emitter.settings import EmitterSettings


class TestFromEnv:
    def test_nothing_set_gives_the_documented_defaults(self):
        """10,000 events, 500 ms, 256 KiB an event, 64 MiB in all."""
        assert EmitterSettings.from_env({}) == EmitterSettings(10_000, 500, 256 << 10, 64 << 20)

    def test_every_variable_is_read(self):
        """Each EMITTER_* variable sets its own field."""
        env = {
            "EMITTER_SNDHWM": "50",
            "EMITTER_LINGER_MS": "0",
            "EMITTER_MAX_EVENT_BYTES": "4096",
            "EMITTER_QUEUE_MAX_BYTES": "1048576",
        }
        assert EmitterSettings.from_env(env) == EmitterSettings(50, 0, 4096, 1 << 20)

    @pytest.mark.parametrize(
        ("variable", "value", "accepted"),
        [
            ("EMITTER_SNDHWM", "0", "a positive integer"),
            ("EMITTER_LINGER_MS", "soon", "an integer >= 0"),
            ("EMITTER_MAX_EVENT_BYTES", "1000", "an integer >= 1024"),
            ("EMITTER_QUEUE_MAX_BYTES", "-5", "a positive integer"),
        ],
    )
    def test_a_bad_value_names_the_variable_the_value_and_what_is_accepted(
        self, variable: str, value: str, accepted: str
    ):
        """Strictly read, a bad value raises one ConfigError saying what would do."""
        with pytest.raises(ConfigError) as refused:
            EmitterSettings.from_env({variable: value})
        assert str(refused.value) == f"{variable}={value!r} is not valid: expected {accepted}"

    def test_a_queue_too_small_for_the_largest_events_is_refused(self):
        """The queue must hold eight events of the largest size: half for ZeroMQ, half here."""
        env = {"EMITTER_MAX_EVENT_BYTES": "1048576", "EMITTER_QUEUE_MAX_BYTES": "4194304"}
        with pytest.raises(ConfigError) as refused:
            EmitterSettings.from_env(env)
        assert str(refused.value) == (
            "EMITTER_QUEUE_MAX_BYTES='4194304' is not valid: expected at least "
            "8 x EMITTER_MAX_EVENT_BYTES (8388608)"
        )

    def test_leniently_each_bad_value_is_reported_and_its_default_used(self):
        """Inside the app a bad value is reported once and publishing carries on."""
        reports: list[str] = []
        env = {"EMITTER_SNDHWM": "lots", "EMITTER_LINGER_MS": "250"}
        settings = EmitterSettings.from_env(env, report=reports.append)
        assert settings == EmitterSettings(sndhwm=10_000, linger_ms=250)
        assert reports == [
            "EMITTER_SNDHWM='lots' is not valid: expected a positive integer; "
            "using the default 10000"
        ]

    def test_leniently_a_queue_too_small_lowers_the_event_limit_not_the_memory_bound(self):
        """The byte bound is the promise kept; the largest accepted event shrinks to fit it."""
        reports: list[str] = []
        env = {"EMITTER_MAX_EVENT_BYTES": "1048576", "EMITTER_QUEUE_MAX_BYTES": "4194304"}
        settings = EmitterSettings.from_env(env, report=reports.append)
        assert (settings.max_event_bytes, settings.queue_max_bytes) == (524288, 4194304)
        assert len(reports) == 1
        assert reports[0].endswith(
            "using EMITTER_MAX_EVENT_BYTES=524288 and EMITTER_QUEUE_MAX_BYTES=4194304"
        )


class TestDescribe:
    def test_the_defaults_in_one_line(self):
        """What `openalgo-forwarder check` prints about the trading process's side."""
        assert EmitterSettings().describe() == (
            "holds up to 10,000 events (+126 in ZeroMQ) or 64 MiB; refuses events over 256 KiB; "
            "exit waits up to 500 ms"
        )

    def test_sizes_that_are_not_round_are_shown_in_bytes(self):
        """No rounding hides the exact limit an operator set."""
        described = EmitterSettings(50, 0, 1500, 100_000).describe()
        assert described == (
            "holds up to 50 events (+31 in ZeroMQ) or 100,000 bytes; refuses events over "
            "1,500 bytes; exit waits up to 0 ms"
        )
