"""Settings shared by the property-based (hypothesis) tests.

``fuzz_settings(n, ...)`` is ``hypothesis.settings(max_examples=n, ...)`` with ``n`` multiplied by
``RAGOPT_FUZZ_SCALE`` (default 1). ``make fuzz`` runs the ``fuzz``-marked tests at 20x, each run from a new random
seed: that is where new failing inputs are looked for. CI sets ``RAGOPT_HYPOTHESIS_PROFILE=ci`` (derandomized, no
example database): the same examples on every run, so a run fails only for a change, not for an input a random
seed happened to reach first. Every input a fuzz run found is pinned with ``@example`` in its test.
"""

from __future__ import annotations

import os

from hypothesis import settings


def fuzz_scale() -> float:
    raw = os.environ.get("RAGOPT_FUZZ_SCALE", "1")
    try:
        scale = float(raw)
    except ValueError:
        raise ValueError(f"RAGOPT_FUZZ_SCALE must be a number, got {raw!r}") from None
    if not scale > 0:
        raise ValueError(f"RAGOPT_FUZZ_SCALE must be > 0, got {raw!r}")
    return scale


def fuzz_settings(max_examples: int, parent: settings | None = None, **kwargs) -> settings:
    return settings(parent, max_examples=max(1, round(max_examples * fuzz_scale())), **kwargs)
