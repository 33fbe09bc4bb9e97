"""Shared test settings: the app reads APP_* at import, so set a safe env first."""

from __future__ import annotations

import os

# Unit tests import the app without any service configured.
os.environ.setdefault("APP_ENV", "test")
