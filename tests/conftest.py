"""Shared test settings: a safe APP_ENV, so settings read from the environment build."""

from __future__ import annotations

import os

# Unit tests import the app without any service configured.
os.environ.setdefault("APP_ENV", "test")
