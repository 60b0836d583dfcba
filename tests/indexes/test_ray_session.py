"""The Ray session a :class:`~ragopt.distributed.RayShardRunner` starts is the runner's to end, and so is what
``ray.init`` changes in the process: Ray makes SIGTERM raise ``SystemExit`` in the driver and leaves that handler
after ``ray.shutdown``; the runner puts the process' own handler back when it closes the session it started, or
when starting one fails. Skipped when ray (``pip install 'ragopt[ray]'``) is absent."""

from __future__ import annotations

import signal
import sys

import pytest

ray = pytest.importorskip("ray")

from ragopt.distributed import RayShardRunner  # noqa: E402
from ragopt.errors import StageError  # noqa: E402

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="Ray replaces SIGBREAK there")


def _mine(signum, frame):  # the handler a user's program installed before using ragopt
    pass


@pytest.fixture
def own_handler():
    before = signal.signal(signal.SIGTERM, _mine)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, before)


def _ray_like_init(fail: bool = False):
    """Stands in for ray.init: replaces the SIGTERM handler as Ray's does, then succeeds or fails."""

    def init(**kwargs):
        signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(signum))
        if fail:
            raise ConnectionError("no cluster here")

    return init


def test_close_puts_back_the_sigterm_handler(own_handler, monkeypatch):
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", _ray_like_init())
    monkeypatch.setattr(ray, "shutdown", lambda: None)
    runner = RayShardRunner(address="local", workers=1)
    runner._ray()
    assert signal.getsignal(signal.SIGTERM) is not _mine
    runner.close()
    assert signal.getsignal(signal.SIGTERM) is _mine
    runner.close()  # twice: nothing more to give back
    assert signal.getsignal(signal.SIGTERM) is _mine


def test_a_failed_start_puts_back_the_sigterm_handler(own_handler, monkeypatch):
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", _ray_like_init(fail=True))
    with pytest.raises(StageError, match="could not start or join a local Ray cluster: ConnectionError: no cluster"):
        RayShardRunner(address="local", workers=1)._ray()
    assert signal.getsignal(signal.SIGTERM) is _mine


def test_a_session_the_runner_did_not_start_is_left_alone(own_handler, monkeypatch):
    monkeypatch.setattr(ray, "is_initialized", lambda: True)  # the caller's own ray.init
    monkeypatch.setattr(ray, "init", lambda **kw: pytest.fail("ray.init called on a running session"))
    monkeypatch.setattr(ray, "shutdown", lambda: pytest.fail("ray.shutdown of the caller's session"))
    runner = RayShardRunner(workers=1)
    runner._ray()
    runner.close()
    assert signal.getsignal(signal.SIGTERM) is _mine


@pytest.mark.slow
def test_a_real_local_cluster_gives_the_handler_back(own_handler, monkeypatch):
    """With Ray itself: its init does take SIGTERM over (the reason for the above), and close gives it back."""
    if ray.is_initialized():
        pytest.skip("a Ray session of another test is running in this process")
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")  # Ray would otherwise write a token into the home folder
    monkeypatch.setenv("RAY_memory_monitor_refresh_ms", "0")
    runner = RayShardRunner(address="local", workers=1)
    try:
        runner._ray()
        assert ray.is_initialized() and signal.getsignal(signal.SIGTERM) is not _mine
    finally:
        runner.close()
    assert not ray.is_initialized() and signal.getsignal(signal.SIGTERM) is _mine
