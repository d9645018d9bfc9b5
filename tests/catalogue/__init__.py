"""The error catalogue's cases, by area, all in one registry (``catalogue.registry.CASES``).

``tests/test_error_catalogue.py`` runs every case as ``test_error[<id>]`` and checks them against
docs/errors.md. A new case goes in the module of its area with ``@case(...)``; a new area module
goes in ``AREAS``.
"""

from __future__ import annotations

import importlib

from catalogue.registry import CASES, GPU_ONLY

#: The area modules, in the order of docs/errors.md.
AREAS = ("routing", "probe", "monitor", "engines", "metrics", "alerts", "sinks", "cli", "report")

for _area in AREAS:
    importlib.import_module(f"catalogue.{_area}")

__all__ = ["AREAS", "CASES", "GPU_ONLY"]
