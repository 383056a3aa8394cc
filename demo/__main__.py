"""`python -m demo`: run the demo and exit with its status."""

from __future__ import annotations

from demo.run import main

raise SystemExit(main())
