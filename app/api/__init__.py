"""Version 1 of the public API: one blueprint, ``bp``, whose routes are in ``users.py``."""

from __future__ import annotations

from .users import bp

__all__ = ["bp"]
