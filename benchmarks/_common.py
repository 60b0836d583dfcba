"""What every benchmark script records: the machine, the package versions, the commit, the load average; and
this process's resident memory."""

from __future__ import annotations

import contextlib
import datetime
import importlib.metadata
import os
import platform
import statistics
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def make_llm(model: str, store: Any, backend: str = "transformers", threads: int | None = None, batch_size: int = 8):
    """The LLM backend of a benchmark run: the packaged GGUF as quantised through llama.cpp (``threads`` for
    generation and prompt processing; ``mmap`` off, which this VM needs) or a float32 copy through transformers
    on the CPU; its artifacts and call cache in ``store``."""
    if backend == "llama_cpp":
        from ragopt.llm.llama_cpp_backend import LlamaCppLLM

        return LlamaCppLLM(model=model, n_threads=threads or None, mmap=False).use_store(store)
    from ragopt.llm.transformers_backend import TransformersLLM

    return TransformersLLM(model=model, device="cpu", batch_size=batch_size).use_store(store)


def store() -> Any:
    """The artifact store of the LLM benchmarks (indexes, converted models and the LLM call cache):
    ``$RAGOPT_INDEX_DIR``, else /work/ragbench-store, so reruns reuse every answer already generated."""
    from ragopt.store import ArtifactStore

    return ArtifactStore(os.environ.get("RAGOPT_INDEX_DIR") or "/work/ragbench-store")


def model_key(model: str, backend: str = "transformers") -> str:
    """A model's name in the results: the alias, with ``@llama_cpp`` when llama.cpp ran it."""
    return model + ("@llama_cpp" if backend == "llama_cpp" else "")


def med(xs: Sequence[float]) -> float:
    return float(statistics.median(xs))


def load() -> list[float]:
    """The 1, 5 and 15 minute load averages: how busy the (often shared) machine was."""
    return [round(x, 2) for x in os.getloadavg()]


def machine_info(packages: Sequence[str]) -> dict[str, Any]:
    """Date, CPU model and count, Python, platform, git commit and the versions of ``packages``."""
    cpu, flags = platform.processor(), []
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and cpu == platform.processor():
                cpu = line.split(":", 1)[1].strip()
            elif line.startswith("flags"):  # the SIMD features that pick integer/float kernels
                flags = sorted(
                    f
                    for f in line.split(":", 1)[1].split()
                    if f.startswith(("avx", "amx", "fma", "f16c", "sse4")) or "vnni" in f
                )
                break
    versions = {}
    for pkg in ("ragopt", *packages):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            versions[pkg] = importlib.metadata.version(pkg)
    commit = None
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        commit = (
            subprocess.run(
                ["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=10
            ).stdout.strip()
            or None
        )
    return {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)),
        "cpu": cpu,
        "cpu_flags": flags,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "git_commit": commit,
        "versions": versions,
    }


def merge_result(path: Path, section: str, value: Any, key: str | None = None) -> None:
    """Set ``section`` (or ``section[key]``) of the JSON results file ``path``, keeping the other sections."""
    import fcntl
    import json

    from ragopt._io import atomic_write_text

    path.parent.mkdir(parents=True, exist_ok=True)
    # runs side by side (one per core) merge into one file: read-modify-write under a lock, or one loses its rows
    with open(path.with_name(f".{path.name}.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        data = json.loads(path.read_text("utf-8")) if path.is_file() else {}
        if key is None:
            data[section] = value
        else:
            data.setdefault(section, {})[key] = value
        atomic_write_text(path, json.dumps(data, indent=1) + "\n")


def proc_status(field: str) -> int:
    """``VmRSS`` / ``VmHWM`` (peak RSS) of this process, bytes. Unlike ``ru_maxrss``, ``VmHWM`` does not carry over
    exec: Linux keeps the forking parent's peak in ``ru_maxrss`` of a child started by fork + exec."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise OSError(f"no {field} in /proc/self/status")


def reset_peak_rss() -> bool:
    """Reset this process' peak RSS (VmHWM) to its current RSS (Linux >= 4.0)."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False
