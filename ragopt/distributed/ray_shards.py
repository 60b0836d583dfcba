"""Encode a corpus' shards on a Ray cluster: :class:`RayShardRunner`.

The runner starts ``workers`` Ray actors (``cpus_per_worker`` CPUs each, default 1); each rebuilds the encoder from
its config (``from_config``), loads the model once and encodes whole shards, so a shard's texts are batched exactly
as a single process batches them (sorted by length within the shard, ``batch_size`` at a time) and its vectors are
those of the single-machine path. Before any shard is sent every actor reports its encoder spec (model identity and
content fingerprint, precision, prefix, max length): one that differs from the driver's (another model version on
that node, fp16 on a GPU node under ``precision: auto``) stops the build with an :class:`ArtifactError` naming the
node, since its vectors would not be the ones the artifact key promises.

Shards go out as texts and come back as float32 arrays through Ray's object store: the workers need ragopt, the
encoder's packages and the model (a hub id, the packaged alias, or a path present on every node), not a shared
file system. Each actor keeps ``in_flight`` shards queued so it never waits on the driver; the driver writes each
shard as it arrives (:func:`~ragopt.encoders.shards.encode_in_shards`), so an interrupted distributed build resumes
from the shards already written, on one machine or on Ray.
"""

from __future__ import annotations

import math
import os
import signal
import socket
import sys
import threading
from collections import deque
from collections.abc import Iterator, Sequence
from typing import Any

from ragopt._imports import require
from ragopt.config import canonical_json
from ragopt.encoders.shards import RemoteShardJob
from ragopt.errors import ArtifactError, ConfigError, StageError, first_line

__all__ = ["RayShardRunner"]


class _ShardEncoder:
    """The Ray actor: one encoder, loaded once, encoding whole shards."""

    def __init__(self, encoder_config: dict[str, Any], kind: str):
        from ragopt.config import from_config

        self.encoder = from_config(encoder_config)
        self.kind = kind

    def info(self) -> dict[str, Any]:
        import ray

        return {
            "spec": self.encoder.spec(self.kind),
            "node": ray.get_runtime_context().get_node_id(),
            "host": socket.gethostname(),
            "pid": os.getpid(),
        }

    def encode(self, index: int, texts: list[str]) -> tuple[int, Any, dict[str, int], dict[str, float]]:
        from ragopt.types import Stats

        stats = Stats()
        vecs = self.encoder.encode(list(texts), self.kind, stats)
        return index, vecs, dict(stats.counts), dict(stats.seconds)


#: the signal ``ray.init`` takes over in the driver (its handler calls ``sys.exit``) and leaves after ``ray.shutdown``
_RAY_SIGNAL = getattr(signal, "SIGBREAK", signal.SIGTERM) if sys.platform == "win32" else signal.SIGTERM


def _cause(e: BaseException) -> str:
    """The worker's own exception text out of Ray's wrapper (first line)."""
    cause = getattr(e, "cause", None)
    return first_line(cause if isinstance(cause, BaseException) else e)


#: seconds to wait for a cluster's address to accept a TCP connection before ray.init is tried (Ray retries an address
#: where nothing listens for minutes, printing a warning every few seconds)
CONNECT_TIMEOUT_S = 10.0


def _check_reachable(address: str, timeout: float) -> None:
    """That a ``host:port`` or ``ray://host:port`` address accepts a TCP connection within ``timeout`` seconds;
    a StageError naming it otherwise. Other forms (``auto``, a host without a port, other schemes) are Ray's to
    resolve and are not probed."""
    rest = address[len("ray://") :] if address.startswith("ray://") else address
    if "://" in rest:
        return
    host, sep, port_s = rest.rpartition(":")
    if not sep or not host or not port_s.isascii() or not port_s.isdigit():
        return
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host  # [::1]:6379
    port = int(port_s)
    if not 0 < port <= 65535:
        raise ConfigError("ray.address", f"{address!r}: port {port} is outside 1..65535")
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except (socket.gaierror, UnicodeError) as e:
        why = f"cannot resolve host {host!r} ({getattr(e, 'strerror', None) or e})"
    except TimeoutError:
        why = f"no answer from {host}:{port} within {timeout:g} s"
    except OSError as e:
        why = f"{host}:{port}: {e.strerror or e}"
    else:
        return
    raise StageError(f"could not join the Ray cluster at {address!r}: {why}")


class RayShardRunner:
    """Encode shards on Ray actors (a :class:`~ragopt.encoders.shards.ShardRunner`).

    ``address``: the cluster to join: ``"auto"`` (the cluster this node belongs to, or ``$RAY_ADDRESS``),
    ``"host:6379"``, ``"ray://host:10001"`` (Ray client); ``"local"`` starts a private cluster on this machine
    (``workers x cpus_per_worker`` CPUs) for trying it out; ``None`` uses the Ray session this process already
    started (``ray.init`` was called) or else behaves as ``"local"``. ``workers``: actors to start (default: the
    cluster's CPUs divided by ``cpus_per_worker``, at most one per shard). The actors of an encoder are started on
    its first run and kept for later runs of the same encoder until :meth:`close`, which also shuts down a cluster
    this runner started and puts back the process' SIGTERM handler, which ``ray.init`` replaces with one that
    exits. A ``host:port`` or ``ray://host:port`` address must accept a TCP connection within ``connect_timeout``
    seconds before Ray is asked to join it (a StageError otherwise, where Ray would retry for minutes).
    :attr:`report` says what ran where (workers, hosts, shards and texts encoded, shards per worker)."""

    def __init__(
        self,
        address: str | None = None,
        workers: int | None = None,
        cpus_per_worker: float = 1.0,
        in_flight: int = 2,
        init_kwargs: dict[str, Any] | None = None,
        connect_timeout: float = CONNECT_TIMEOUT_S,
    ):
        if workers is not None and workers < 1:
            raise ConfigError("ray.workers", f"must be >= 1, got {workers}")
        if not 0 < cpus_per_worker < math.inf:  # NaN too (it reached Ray's int() as a traceback)
            raise ConfigError("ray.cpus_per_worker", f"must be a finite number > 0, got {cpus_per_worker}")
        if in_flight < 1:
            raise ConfigError("ray.in_flight", f"must be >= 1, got {in_flight}")
        if not 0 < connect_timeout < math.inf:
            raise ConfigError("ray.connect_timeout", f"must be a finite number of seconds > 0, got {connect_timeout}")
        self.connect_timeout = float(connect_timeout)
        self.address = address
        self.workers = workers
        self.cpus_per_worker = float(cpus_per_worker)
        self.in_flight = int(in_flight)
        self.init_kwargs = dict(init_kwargs or {})
        self._started = False
        self._signal_handler: Any = None  # the process' own handler of the signal ray.init takes over
        self._pool: dict[str, tuple[list[Any], list[dict[str, Any]]]] = {}  # encoder -> (actors, their info)
        self.report: dict[str, Any] = {
            "address": address,
            "workers": 0,
            "hosts": [],
            "shards": 0,
            "texts": 0,
            "per_worker": {},
        }

    def __repr__(self) -> str:
        return f"RayShardRunner(address={self.address!r}, workers={self.workers!r})"

    # -- cluster ------------------------------------------------------------------------------
    def _ray(self) -> Any:
        ray = require("ray", "ray", "encoding on a Ray cluster (--ray)")
        if ray.is_initialized():
            return ray
        kwargs = {"log_to_driver": False, "include_dashboard": False, **self.init_kwargs}
        local = self.address in (None, "local")
        if local:
            kwargs.setdefault("num_cpus", int(max(1, (self.workers or os.cpu_count() or 1) * self.cpus_per_worker)))
        else:
            kwargs.pop("include_dashboard")  # a setting of the head node, not of a joining driver
            _check_reachable(str(self.address), self.connect_timeout)
        # ray.init makes SIGTERM raise SystemExit in this process and keeps it so after ray.shutdown; the caller's
        # handler is put back when this runner ends the session it started (close) or fails to start one
        main = threading.current_thread() is threading.main_thread()
        self._signal_handler = signal.getsignal(_RAY_SIGNAL) if main else None
        try:
            ray.init(address=None if local else self.address, **kwargs)
        except Exception as e:  # ConnectionError, RuntimeError, ValueError: all mean "no cluster there"
            self._restore_signal()
            where = "a local Ray cluster" if local else f"the Ray cluster at {self.address!r}"
            raise StageError(f"could not start or join {where}: {_cause(e)}") from e
        self._started = True
        return ray

    def _restore_signal(self) -> None:
        handler, self._signal_handler = self._signal_handler, None
        if handler is not None and threading.current_thread() is threading.main_thread():
            signal.signal(_RAY_SIGNAL, handler)

    def close(self) -> None:
        """Stop this runner's actors, and the Ray session if this runner started it."""
        if self._pool:
            import ray

            if ray.is_initialized():
                self._drop(ray)
            self._pool.clear()
        if self._started:
            import ray

            ray.shutdown()
            self._started = False
            self._restore_signal()

    def __enter__(self) -> RayShardRunner:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- work ---------------------------------------------------------------------------------
    def run(self, job: RemoteShardJob, todo: Sequence[tuple[int, Sequence[str]]]) -> Iterator[tuple[int, Any]]:
        if not todo:
            return
        ray = self._ray()
        actors, infos = self._actors(ray, job, len(todo))
        n_workers = len(actors)
        self.report["workers"] = max(self.report["workers"], n_workers)
        self.report["hosts"] = sorted(set(self.report["hosts"]) | {i["host"] for i in infos})
        queue = deque(todo)
        pending: dict[Any, tuple[int, int]] = {}  # object ref -> (worker, shard)

        def submit(w: int) -> None:
            i, texts = queue.popleft()
            pending[actors[w].encode.remote(i, list(texts))] = (w, i)

        ok = False
        try:
            for _ in range(self.in_flight):
                for w in range(n_workers):
                    if queue:
                        submit(w)
            while pending:
                done, _ = ray.wait(list(pending), num_returns=1)
                w, i = pending.pop(done[0])
                try:
                    index, vecs, counts, seconds = ray.get(done[0])
                except Exception as e:
                    raise StageError(
                        f"ray worker {w} on host {infos[w]['host']} failed on shard {i}: {_cause(e)} "
                        "(the shards written so far are kept; run again to resume)"
                    ) from e
                if queue:
                    submit(w)
                if job.on_stats is not None:
                    job.on_stats(counts, seconds)
                self.report["shards"] += 1
                self.report["texts"] += int(getattr(vecs, "shape", (0,))[0])
                self.report["per_worker"][w] = self.report["per_worker"].get(w, 0) + 1
                yield index, vecs
            ok = True
        finally:
            if not ok:  # failed or abandoned half way: these actors may still be busy or broken
                for ref in pending:
                    try:
                        ray.cancel(ref, force=False)
                    except Exception:
                        pass
                self._drop(ray, job)

    def _key(self, job: RemoteShardJob) -> str:
        return canonical_json([job.encoder_config, job.kind])

    def _actors(self, ray: Any, job: RemoteShardJob, n_todo: int) -> tuple[list[Any], list[dict[str, Any]]]:
        """The actors of this encoder (started once per runner and kept for its later runs), checked against the
        driver's encoder spec."""
        key = self._key(job)
        if key in self._pool:
            return self._pool[key]
        n_workers = self.workers or max(1, int(ray.cluster_resources().get("CPU", 1) // self.cpus_per_worker))
        n_workers = min(n_workers, n_todo) if self.workers is None else n_workers
        actor_cls = ray.remote(num_cpus=self.cpus_per_worker, max_restarts=0)(_ShardEncoder)
        actors = [actor_cls.remote(job.encoder_config, job.kind) for _ in range(n_workers)]
        self._pool[key] = (actors, [])
        try:
            infos = []
            for w, ref in enumerate([a.info.remote() for a in actors]):
                try:
                    infos.append(ray.get(ref))
                except Exception as e:
                    raise StageError(f"ray worker {w} could not load the encoder: {_cause(e)}") from e
            want = canonical_json(job.spec)
            for w, info in enumerate(infos):
                if canonical_json(info["spec"]) != want:
                    diff = {k: (job.spec.get(k), v) for k, v in info["spec"].items() if job.spec.get(k) != v}
                    raise ArtifactError(
                        f"ray worker {w} on host {info['host']} (node {info['node'][:12]}) would encode differently "
                        f"from this process ({', '.join(f'{k}: here {a!r}, there {b!r}' for k, (a, b) in diff.items())}"
                        "); its vectors would not match the embeddings key: install the same model and packages "
                        "on every node, or pin device/precision in the encoder config"
                    )
        except BaseException:
            self._drop(ray, job)
            raise
        self._pool[key] = (actors, infos)
        return actors, infos

    def _drop(self, ray: Any, job: RemoteShardJob | None = None) -> None:
        """Kill the actors of ``job``'s encoder (all actors when None)."""
        keys = [self._key(job)] if job is not None else list(self._pool)
        for key in keys:
            actors, _ = self._pool.pop(key, ([], []))
            for a in actors:
                try:
                    ray.kill(a)
                except Exception:
                    pass
