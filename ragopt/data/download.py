"""Download of the standard BEIR datasets (zip from the UKP mirror, md5-verified, extracted atomically)."""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
import tempfile
import urllib.request
import zipfile
from pathlib import Path, PurePosixPath

from ragopt.errors import DataError

__all__ = ["BEIR_DATASETS", "BEIR_URL", "beir_url", "download_beir"]

BEIR_URL = "https://public.ukp.informatik.tu-darmstadt.de/thakur/BEIR/datasets/{name}.zip"

# md5 of each official zip, from the "Available Datasets" table of the BEIR README
# (repository beir-cellar/beir, file README.md). Datasets the table marks as not public
# (bioasq, signal1m, trec-news, robust04) have no zip and are left out.
BEIR_DATASETS: dict[str, str] = {
    "msmarco": "444067daf65d982533ea17ebd59501e4",
    "trec-covid": "ce62140cb23feb9becf6270d0d1fe6d1",
    "nfcorpus": "a89dba18a62ef92f7d323ec890a0d38d",
    "nq": "d4d3d2e48787a744b6f6e691ff534307",
    "hotpotqa": "f412724f78b0d91183a0e86805e16114",
    "fiqa": "17918ed23cd04fb15047f73e6c3bd9d9",
    "arguana": "8ad3e3c2a5867cdced806d6503f29b99",
    "webis-touche2020": "46f650ba5a527fc69e0a6521c5a23563",
    "cqadupstack": "4e41456d7df8ee7760a7f866133bda78",
    "quora": "18fb154900ba42a600f84b839c173167",
    "dbpedia-entity": "c2a39eb420a3164af735795df012ac2c",
    "scidocs": "38121350fc3a4d2f48850f6aff52e4a9",
    "fever": "5a818580227bfb4b35bb6fa46d9b6c03",
    "climate-fever": "8b66f0a9126c521bae2bde127b4dc99d",
    "scifact": "5f7d1de60b170fc8027bb7898e2efca1",
}

_CHUNK = 1 << 20


def beir_url(name: str) -> str:
    """The zip URL of ``name``: the template in ``$RAGOPT_BEIR_URL`` (with ``{name}``) or the UKP mirror."""
    return (os.environ.get("RAGOPT_BEIR_URL") or BEIR_URL).format(name=name)


def _fetch(url: str, dest: Path, name: str, progress: bool) -> str:
    """Stream ``url`` into ``dest``; return the md5 of the bytes written."""
    from tqdm.auto import tqdm

    md5 = hashlib.md5()
    req = urllib.request.Request(url, headers={"User-Agent": "ragopt"})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp, open(dest, "wb") as out:
            total = int(resp.headers.get("Content-Length") or 0) or None
            with tqdm(
                total=total, unit="B", unit_scale=True, desc=f"download {name}", file=sys.stderr, disable=not progress
            ) as bar:
                while chunk := resp.read(_CHUNK):
                    out.write(chunk)
                    md5.update(chunk)
                    bar.update(len(chunk))
    except OSError as e:  # URLError, HTTPError, timeouts are OSErrors
        raise DataError(f"download of {url} failed: {e}") from e
    return md5.hexdigest()


def _safe_members(zf: zipfile.ZipFile, source: str) -> list[zipfile.ZipInfo]:
    """The members to extract; an absolute path or a ``..`` component rejects the whole archive."""
    members = []
    for info in zf.infolist():
        p = PurePosixPath(info.filename.replace("\\", "/"))
        if p.is_absolute() or ".." in p.parts or (p.parts and ":" in p.parts[0]):
            raise DataError(f"{source}: unsafe path in zip archive: {info.filename!r}")
        if p.parts and p.parts[0] == "__MACOSX":
            continue
        members.append(info)
    return members


def _dataset_root(extracted: Path, name: str) -> Path:
    """The folder inside the extracted archive that holds the dataset (normally ``<name>/``)."""
    if (extracted / name).is_dir():
        return extracted / name
    entries = [p for p in extracted.iterdir() if p.name != "__MACOSX"]
    if len(entries) == 1 and entries[0].is_dir():
        return entries[0]
    return extracted


def download_beir(
    name: str,
    dest_root: str | os.PathLike,
    url: str | None = None,
    md5: str | None = None,
    progress: bool | None = None,
) -> Path:
    """Download the BEIR dataset ``name`` into ``dest_root/name`` and return that folder.

    ``md5`` defaults to the published checksum (a mismatch raises :class:`DataError`). The zip is
    streamed to a temp file in ``dest_root``, checked, extracted to a temp folder and moved into place
    with ``os.replace``: an interrupted or failed download leaves nothing at ``dest_root/name``.
    A progress bar goes to stderr when it is a terminal (``progress=None``)."""
    dest_root = Path(dest_root)
    target = dest_root / name
    if target.is_dir():
        return target
    url = url or beir_url(name)
    md5 = md5 or BEIR_DATASETS.get(name)
    progress = sys.stderr.isatty() if progress is None else progress
    dest_root.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest_root, prefix=f".{name}-", suffix=".zip.part")
    os.close(fd)
    zip_path, tmp_dir = Path(tmp), Path(tempfile.mkdtemp(dir=dest_root, prefix=f".{name}-extract-"))
    try:
        got = _fetch(url, zip_path, name, progress)
        if md5 is not None and got != md5.lower():
            raise DataError(f"{url}: md5 mismatch (expected {md5}, got {got}); the download was deleted")
        try:
            with zipfile.ZipFile(zip_path) as zf:
                zf.extractall(tmp_dir, members=_safe_members(zf, url))
        except zipfile.BadZipFile as e:
            raise DataError(f"{url}: not a valid zip archive: {e}") from e
        src = _dataset_root(tmp_dir, name)
        try:
            os.replace(src, target)
        except OSError:
            if not target.is_dir():  # a concurrent download that won the race is fine
                raise
        return target
    finally:
        zip_path.unlink(missing_ok=True)
        shutil.rmtree(tmp_dir, ignore_errors=True)
