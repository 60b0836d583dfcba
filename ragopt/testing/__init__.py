"""Conformance suites that ragopt's own components, and third-party ones, must pass (see
:mod:`ragopt.testing.tuners`). Importing this package needs no test framework."""
