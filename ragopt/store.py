"""Content-addressed artifact store (indexes, embeddings, runs, score caches).

An artifact lives in ``<root>/<kind>/<key>/`` where ``key`` is a hash of its *spec*: the canonical config
of everything upstream that shaped it, the corpus fingerprint and the artifact kind's format version.
Each artifact directory holds its files plus ``manifest.json`` (spec, format version, ragopt version,
creation time, file sizes and sha256). Artifacts are built in a temporary sibling directory and renamed
into place, so a crash or Ctrl-C never leaves a half-written artifact where a reader would find it.

Loading checks the manifest: an artifact whose spec or format version differs from what the caller
expects is never used silently (:class:`~ragopt.errors.ArtifactError`), and neither is one whose files
are missing or altered.

The root is, in order: the ``root`` argument, ``$RAGOPT_INDEX_DIR``, ``./indexes``.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ragopt import __version__
from ragopt._hashing import sha256_file
from ragopt._io import write_error
from ragopt.config import canonical_json
from ragopt.errors import ArtifactError

__all__ = ["ArtifactStore", "Artifact", "default_root", "MANIFEST"]

MANIFEST = "manifest.json"
ENV_VAR = "RAGOPT_INDEX_DIR"


def default_root() -> Path:
    return Path(os.environ.get(ENV_VAR) or "indexes")


@dataclass
class Artifact:
    """A finished artifact: its directory and manifest."""

    path: Path
    manifest: dict[str, Any]
    created: bool = False  # True when this call built it, False when it was reused

    def file(self, name: str) -> Path:
        return self.path / name

    @property
    def key(self) -> str:
        return self.path.name

    def verify(self, checksums: bool = True) -> None:
        """Raise ArtifactError if the manifest's file list is malformed, or a listed file is missing, resized or
        (with ``checksums``) altered."""
        files = self.manifest.get("files")
        if not isinstance(files, dict):
            raise ArtifactError(f"corrupt artifact {self.path}: {MANIFEST} has no file list (rebuild with --rebuild)")
        for name, info in files.items():
            if (
                not isinstance(info, dict)
                or not isinstance(info.get("size"), int)
                or isinstance(info.get("size"), bool)
                or not isinstance(info.get("sha256"), str)
                or not _inside(name)
            ):
                raise ArtifactError(
                    f"corrupt artifact {self.path}: {MANIFEST} lists {name!r} without a size and sha256 or outside "
                    "the artifact (rebuild with --rebuild)"
                )
            f = self.path / name
            if not f.is_file():
                raise ArtifactError(
                    f"corrupt artifact {self.path}: file {name!r} is missing "
                    "(delete the directory or rebuild with --rebuild)"
                )
            if f.stat().st_size != info["size"]:
                raise ArtifactError(
                    f"corrupt artifact {self.path}: file {name!r} has {f.stat().st_size} "
                    f"bytes, manifest says {info['size']} (rebuild with --rebuild)"
                )
            if checksums and sha256_file(f) != info["sha256"]:
                raise ArtifactError(
                    f"corrupt artifact {self.path}: file {name!r} does not match its checksum (rebuild with --rebuild)"
                )


def _publish(tmp: Path, final: Path) -> bool:
    """Move the finished folder ``tmp`` to ``final``, replacing what is there (moved aside first, then removed).
    False when another process put its own ``final`` in place in the meantime (ours is left at ``tmp``)."""
    old = None
    if final.exists():
        old = final.parent / f".old-{final.name}-{uuid.uuid4().hex[:8]}"
        try:
            os.rename(final, old)
        except FileNotFoundError:  # another process moved it away first
            old = None
    try:
        os.rename(tmp, final)
    except OSError as e:
        if e.errno not in (errno.ENOTEMPTY, errno.EEXIST):
            raise
        return False
    finally:
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    return True


class ArtifactStore:
    """Find or build artifacts by spec. ``root=None`` uses :func:`default_root`."""

    def __init__(self, root: str | os.PathLike | None = None, verify_checksums: bool = True):
        self.root = Path(root) if root is not None else default_root()
        if self.root.exists() and not self.root.is_dir():  # was a NotADirectoryError at the first artifact written
            raise ArtifactError(f"artifact store {self.root} is a file, not a folder (--index-dir, RAGOPT_INDEX_DIR)")
        self.verify_checksums = verify_checksums

    def __repr__(self) -> str:
        return f"ArtifactStore({str(self.root)!r})"

    @staticmethod
    def key(kind: str, spec: dict[str, Any], format_version: int) -> str:
        payload = {"kind": kind, "format": format_version, "spec": spec}
        return hashlib.sha256(canonical_json(payload).encode("utf-8")).hexdigest()[:24]

    def path(self, kind: str, spec: dict[str, Any], format_version: int) -> Path:
        return self.root / kind / self.key(kind, spec, format_version)

    def open(
        self,
        path: str | os.PathLike,
        kind: str | None = None,
        spec: dict[str, Any] | None = None,
        format_version: int | None = None,
    ) -> Artifact:
        """Open an existing artifact directory and check it is what the caller expects."""
        path = Path(path)
        mpath = path / MANIFEST
        if not mpath.is_file():
            raise ArtifactError(
                f"{path} is not a ragopt artifact (no {MANIFEST}); it may be incomplete or not an index at all"
            )
        try:
            manifest = json.loads(mpath.read_text("utf-8"))
        except (OSError, ValueError) as e:  # ValueError: not UTF-8, not JSON
            raise ArtifactError(f"corrupt artifact {path}: unreadable {MANIFEST} ({e})") from e
        if not isinstance(manifest, dict):
            raise ArtifactError(f"corrupt artifact {path}: {MANIFEST} holds a {type(manifest).__name__}, not an object")
        if kind is not None and manifest.get("kind") != kind:
            raise ArtifactError(f"artifact {path} is a {manifest.get('kind')!r}, expected a {kind!r}")
        if format_version is not None and manifest.get("format") != format_version:
            raise ArtifactError(
                f"artifact {path} was written in format version {manifest.get('format')!r}, this ragopt reads "
                f"version {format_version}: rebuild it (ragopt index --rebuild)"
            )
        if spec is not None and not _same_json(manifest.get("spec"), spec):
            have = manifest.get("spec")
            diff = _spec_diff(have, spec) if isinstance(have, dict) and isinstance(spec, dict) else f"spec {have!r}"
            raise ArtifactError(
                f"artifact {path} was built for another configuration or corpus ({diff}); it will not be reused"
            )
        art = Artifact(path, manifest)
        art.verify(checksums=self.verify_checksums)
        return art

    def find(self, kind: str, spec: dict[str, Any], format_version: int) -> Artifact | None:
        path = self.path(kind, spec, format_version)
        if not path.exists():
            return None
        return self.open(path, kind, spec, format_version)

    def get_or_create(
        self,
        kind: str,
        spec: dict[str, Any],
        format_version: int,
        build: Callable[[Path], dict[str, Any] | None],
        rebuild: bool = False,
    ) -> Artifact:
        """Return the artifact for ``spec``, building it with ``build(tmp_dir)`` when absent.

        ``build`` writes files into the directory it is given and may return extra manifest fields.
        With ``rebuild`` an existing artifact (even a corrupt one) is replaced, atomically."""
        final = self.path(kind, spec, format_version)
        if final.exists() and not rebuild:
            return self.open(final, kind, spec, format_version)
        what = f"{kind} artifact {final.name}"
        tmp = final.parent / f".tmp-{final.name}-{uuid.uuid4().hex[:8]}"
        try:
            final.parent.mkdir(parents=True, exist_ok=True)
            tmp.mkdir()
        except OSError as e:
            err = write_error(e, what, self.root)
            if err is None:
                raise
            raise err from e
        try:
            t0 = time.perf_counter()
            extra = build(tmp) or {}
            files = {}
            for f in sorted(p for p in tmp.rglob("*") if p.is_file()):
                rel = f.relative_to(tmp).as_posix()
                files[rel] = {"size": f.stat().st_size, "sha256": sha256_file(f)}
            manifest = {
                "kind": kind,
                "format": format_version,
                "key": final.name,
                "spec": spec,
                "ragopt_version": __version__,
                "created_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "build_seconds": round(time.perf_counter() - t0, 3),
                "files": files,
                **extra,
            }
            with open(tmp / MANIFEST, "w", encoding="utf-8") as fh:
                json.dump(manifest, fh, indent=2, sort_keys=True)
                fh.flush()
                os.fsync(fh.fileno())
            if final.exists() and not rebuild:  # another process finished first: keep theirs
                shutil.rmtree(tmp, ignore_errors=True)
                return self.open(final, kind, spec, format_version)
            if not _publish(tmp, final):
                # another process published the same artifact between our check and our rename: the key names
                # the content, so theirs is as good as ours
                shutil.rmtree(tmp, ignore_errors=True)
                return self.open(final, kind, spec, format_version)
        except BaseException as e:
            shutil.rmtree(tmp, ignore_errors=True)
            err = write_error(e, what, self.root)  # disk full, read-only: say so, naming the artifact and store
            if err is None:
                raise
            raise err from e
        return Artifact(final, manifest, created=True)

    def list(self, kind: str | None = None) -> list[Artifact]:
        """Every finished artifact (optionally of one kind); unreadable ones are skipped."""
        out = []
        kinds = (
            [self.root / kind] if kind else [p for p in self.root.iterdir() if p.is_dir()] if self.root.is_dir() else []
        )
        for kdir in kinds:
            if not kdir.is_dir():
                continue
            for p in sorted(kdir.iterdir()):
                if p.name.startswith(".") or not (p / MANIFEST).is_file():
                    continue
                try:
                    manifest = json.loads((p / MANIFEST).read_text("utf-8"))
                except (OSError, ValueError):
                    continue
                if isinstance(manifest, dict):
                    out.append(Artifact(p, manifest))
        return out


def _same_json(have: Any, want: Any) -> bool:
    """Whether two specs hash alike; a damaged manifest's spec that cannot be hashed (NaN, Infinity) differs."""
    try:
        return canonical_json(have) == canonical_json(want)
    except ValueError:
        return False


def _inside(name: Any) -> bool:
    """Whether a manifest's file name is a plain relative path inside the artifact (no ``..``, not absolute)."""
    if not isinstance(name, str) or not name or "\x00" in name:
        return False
    return not Path(name).is_absolute() and ".." not in Path(name).parts


def _spec_diff(have: dict, want: dict, prefix: str = "") -> str:
    diffs = []
    for k in sorted(set(have) | set(want)):
        a, b = have.get(k), want.get(k)
        if isinstance(a, dict) and isinstance(b, dict):
            sub = _spec_diff(a, b, f"{prefix}{k}.")
            if sub:
                diffs.append(sub)
        elif a != b:
            name = f"{prefix}{k}"  # a key from a damaged manifest may hold a newline: the error stays one line
            diffs.append(f"{name if name.isprintable() else repr(name)}: built with {a!r}, wanted {b!r}")
    return "; ".join(diffs)
