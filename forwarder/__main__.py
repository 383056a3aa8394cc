"""`python -m forwarder` runs the same command as `openalgo-forwarder`."""

from __future__ import annotations

from forwarder.cli import main

raise SystemExit(main())
