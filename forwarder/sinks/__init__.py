"""Destinations of events; `build_sinks` imports only those the configured modes use."""

from __future__ import annotations

from forwarder.sinks.base import Delivery, Sink
from forwarder.sinks.table import build_sinks

__all__ = ["Delivery", "Sink", "build_sinks"]
