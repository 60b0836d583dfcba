"""download_beir against a local HTTP server: md5 check, atomic extraction, unsafe archives."""

from __future__ import annotations

import functools
import hashlib
import http.server
import threading
import zipfile
from pathlib import Path

import pytest

from ragopt.data import download, load_dataset, resolve_dataset
from ragopt.data.download import BEIR_DATASETS, beir_url, download_beir
from ragopt.errors import DataError, DatasetNotFoundError

CORPUS = '{"_id": "d1", "title": "t", "text": "hello world"}\n{"_id": "d2", "title": "", "text": "bye"}\n'
QUERIES = '{"_id": "q1", "text": "hello?"}\n'
QRELS = "query-id\tcorpus-id\tscore\nq1\td1\t1\n"


def make_zip(path: Path, name: str, extra: dict[str, str] | None = None) -> str:
    """A BEIR-style zip (top-level ``name/`` folder); returns its md5."""
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(f"{name}/corpus.jsonl", CORPUS)
        zf.writestr(f"{name}/queries.jsonl", QUERIES)
        zf.writestr(f"{name}/qrels/test.tsv", QRELS)
        for member, data in (extra or {}).items():
            zf.writestr(member, data)
    return hashlib.md5(path.read_bytes()).hexdigest()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def server(tmp_path):
    """Serve ``tmp_path/www`` on 127.0.0.1; yields (folder, base URL)."""
    www = tmp_path / "www"
    www.mkdir()
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_QuietHandler, directory=str(www)))
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield www, f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)


@pytest.fixture(autouse=True)
def _isolated_env(tmp_path, monkeypatch):
    monkeypatch.setenv("RAGOPT_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("RAGOPT_DATA_PATH", str(tmp_path / "nowhere"))
    monkeypatch.delenv("RAGOPT_OFFLINE", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("RAGOPT_BEIR_URL", raising=False)
    monkeypatch.chdir(tmp_path)


def test_checksum_table():
    assert BEIR_DATASETS["scifact"] == "5f7d1de60b170fc8027bb7898e2efca1"
    assert all(len(v) == 32 and int(v, 16) >= 0 for v in BEIR_DATASETS.values())
    assert beir_url("scifact") == "https://public.ukp.informatik.tu-darmstadt.de/thakur/BEIR/datasets/scifact.zip"


def test_url_override(monkeypatch):
    monkeypatch.setenv("RAGOPT_BEIR_URL", "http://mirror.example/beir/{name}.zip")
    assert beir_url("fiqa") == "http://mirror.example/beir/fiqa.zip"


def test_download_with_correct_md5(server, tmp_path):
    www, base = server
    md5 = make_zip(www / "tiny.zip", "tiny")
    dest = tmp_path / "dl"
    path = download_beir("tiny", dest, url=f"{base}/tiny.zip", md5=md5, progress=False)
    assert path == dest / "tiny"
    ds = load_dataset(path)
    assert ds.corpus.ids == ["d1", "d2"] and ds.qrels() == {"q1": {"d1": 1}}
    assert sorted(p.name for p in dest.iterdir()) == ["tiny"]  # temp zip and extract folder cleaned up
    # a second call finds it in place and does not download again
    (www / "tiny.zip").unlink()
    assert download_beir("tiny", dest, url=f"{base}/tiny.zip", md5=md5, progress=False) == path


def test_wrong_md5_leaves_nothing(server, tmp_path):
    www, base = server
    make_zip(www / "tiny.zip", "tiny")
    dest = tmp_path / "dl"
    with pytest.raises(DataError, match="md5 mismatch"):
        download_beir("tiny", dest, url=f"{base}/tiny.zip", md5="0" * 32, progress=False)
    assert not (dest / "tiny").exists()
    assert list(dest.iterdir()) == []


@pytest.mark.parametrize("member", ["../evil.txt", "tiny/../../evil.txt", "/tmp/evil.txt"])
def test_unsafe_zip_rejected(server, tmp_path, member):
    www, base = server
    md5 = make_zip(www / "tiny.zip", "tiny", extra={member: "pwned"})
    dest = tmp_path / "dl" / "root"
    with pytest.raises(DataError, match="unsafe path"):
        download_beir("tiny", dest, url=f"{base}/tiny.zip", md5=md5, progress=False)
    assert not (dest / "tiny").exists()
    assert list(dest.iterdir()) == []
    assert not (tmp_path / "dl" / "evil.txt").exists() and not (dest / "evil.txt").exists()


def test_http_error_is_data_error(server, tmp_path):
    _, base = server
    with pytest.raises(DataError, match="404"):
        download_beir("missing", tmp_path / "dl", url=f"{base}/missing.zip", md5="0" * 32, progress=False)
    assert list((tmp_path / "dl").iterdir()) == []


def test_resolve_downloads_standard_name_into_cache(server, tmp_path, monkeypatch):
    www, base = server
    md5 = make_zip(www / "tinybeir.zip", "tinybeir")
    monkeypatch.setitem(download.BEIR_DATASETS, "tinybeir", md5)
    monkeypatch.setenv("RAGOPT_BEIR_URL", base + "/{name}.zip")
    ds = load_dataset("tinybeir")
    assert ds.path == tmp_path / "cache" / "datasets" / "tinybeir"
    assert ds.name == "tinybeir" and len(ds.corpus) == 2
    (www / "tinybeir.zip").unlink()  # now found in the cache, without the network
    assert resolve_dataset("tinybeir") == ds.path


def test_resolve_reports_failed_download(server, tmp_path, monkeypatch):
    _, base = server
    monkeypatch.setitem(download.BEIR_DATASETS, "tinybeir", "0" * 32)
    monkeypatch.setenv("RAGOPT_BEIR_URL", base + "/{name}.zip")
    with pytest.raises(DatasetNotFoundError) as e:
        resolve_dataset("tinybeir")
    msg = str(e.value)
    assert "download failed" in msg and "404" in msg and str(tmp_path / "nowhere" / "tinybeir") in msg
    assert not (tmp_path / "cache" / "datasets" / "tinybeir").exists()
    with pytest.raises(DatasetNotFoundError, match="download disabled"):
        resolve_dataset("tinybeir", download=False)


def test_interrupted_download_leaves_nothing(server, tmp_path, monkeypatch):
    www, base = server
    md5 = make_zip(www / "tiny.zip", "tiny")
    real_fetch = download._fetch

    def fetch_then_interrupt(url, dest, name, progress):
        real_fetch(url, dest, name, progress)
        assert dest.stat().st_size > 0  # the partial file exists while downloading
        raise KeyboardInterrupt

    monkeypatch.setattr(download, "_fetch", fetch_then_interrupt)
    dest = tmp_path / "dl"
    with pytest.raises(KeyboardInterrupt):
        download_beir("tiny", dest, url=f"{base}/tiny.zip", md5=md5, progress=False)
    assert list(dest.iterdir()) == []
