"""Moved to :mod:`ragopt.tuning.tuners.hiermab`; this name stays for code that imports it from here."""

from ragopt.tuning.tuners.hiermab import HierMABTuner, OnlineResult, run_online

__all__ = ["HierMABTuner", "run_online", "OnlineResult"]
