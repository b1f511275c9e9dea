"""Lets the tests import ``hub_example`` from this checkout when the package is not installed (for
example when the hub's own test run collects ``examples/``). After ``pip install -e '.[test]'`` this
changes nothing.

The ``provider_harness`` fixture needs no set-up here: integration-hub registers ``hub.testing`` as a
pytest plugin through its ``pytest11`` entry point.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

if importlib.util.find_spec("hub_example") is None:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
