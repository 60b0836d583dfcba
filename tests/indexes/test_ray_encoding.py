"""Encoding on a Ray cluster (``ragopt.distributed``): a local cluster of two workers writes the embeddings that
one machine writes (same artifact key, identical vectors, identical index and rankings), resumes the shards a
single-machine run left, refuses a worker whose encoder differs, and drives ``ragopt index --ray``.

One local Ray session (``ray.init(num_cpus=2)``) serves the module; the encoder is a tiny random BERT
(``ragopt.testing.models.tiny_bert``) over the words of the first 300 cranfield abstracts, encoded in shards of 64.
Skipped when ray (``pip install 'ragopt[ray]'``), the dense extra or the shared data is absent."""

from __future__ import annotations

import json
import re
import signal

import numpy as np
import pytest

pytest.importorskip("faiss")
pytest.importorskip("sentence_transformers")
ray = pytest.importorskip("ray")

from ragopt.distributed import RayShardRunner  # noqa: E402
from ragopt.encoders import SentenceTransformerEncoder  # noqa: E402
from ragopt.encoders import encoder as encoder_module  # noqa: E402
from ragopt.encoders.shards import RemoteShardJob, use_shard_runner  # noqa: E402
from ragopt.errors import ArtifactError, StageError  # noqa: E402
from ragopt.indexes.faiss_index import FaissFlat  # noqa: E402
from ragopt.retrievers.dense import DenseRetriever  # noqa: E402
from ragopt.store import ArtifactStore  # noqa: E402
from ragopt.types import Corpus  # noqa: E402
from tests.conftest import shared_dataset  # noqa: E402

N_DOCS = 300
SHARD = 64  # 300 texts: 5 shards (4 of 64, one of 44)
QUERIES = ["boundary layer transition on a flat plate", "heat transfer in hypersonic flow", "wing slipstream lift"]


@pytest.fixture(scope="module")
def cranfield_slice(tmp_path_factory):
    """The first 300 cranfield documents as a BEIR folder (corpus, queries, qrels), and a tiny BERT over their
    words."""
    from ragopt.testing.models import tiny_bert

    src = shared_dataset("cranfield")
    rows = [json.loads(line) for line, _ in zip(open(src / "corpus.jsonl", encoding="utf-8"), range(N_DOCS))]
    folder = tmp_path_factory.mktemp("cranfield300")
    with open(folder / "corpus.jsonl", "w", encoding="utf-8") as fh:
        fh.writelines(json.dumps(r) + "\n" for r in rows)
    (folder / "queries.jsonl").write_text(
        "".join(json.dumps({"_id": str(i), "text": q}) + "\n" for i, q in enumerate(QUERIES)), "utf-8"
    )
    (folder / "qrels").mkdir()
    (folder / "qrels" / "test.tsv").write_text(f"query-id\tcorpus-id\tscore\n0\t{rows[0]['_id']}\t1\n", "utf-8")
    words = sorted({w for r in rows for w in re.findall(r"[a-z]+", (r["title"] + " " + r["text"]).lower())})
    model = tiny_bert(tmp_path_factory.mktemp("tiny-bi"), words, head="encoder", max_positions=512)
    corpus = Corpus([r["_id"] for r in rows], [r["text"] for r in rows], [r["title"] for r in rows], name="cran300")
    return folder, corpus, model


@pytest.fixture(scope="module")
def ray_cluster():
    """A local Ray cluster of 2 CPUs for the module, private to this test process. Token authentication is off:
    Ray would otherwise write a token into the home folder."""
    mp = pytest.MonkeyPatch()
    mp.setenv("RAY_AUTH_MODE", "disabled")
    mp.setenv("RAY_memory_monitor_refresh_ms", "0")  # on a shared machine Ray's monitor kills workers for others' use
    handler = signal.getsignal(signal.SIGTERM)  # ray.init replaces it (SystemExit) and leaves it after shutdown
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        yield ray
    finally:
        ray.shutdown()
        signal.signal(signal.SIGTERM, handler)  # pytest keeps its own handler after this module
        mp.undo()


@pytest.fixture(scope="module")
def runner(ray_cluster):
    """One runner of two workers for the module: its actors load the model once and serve every test. They take
    half a CPU each, leaving room for the actors that test_a_worker_that_would_encode_differently_is_refused starts."""
    with RayShardRunner(workers=2, cpus_per_worker=0.5) as r:
        yield r


def _delta(runner, before):
    return {k: runner.report[k] - before[k] for k in ("shards", "texts")}


@pytest.fixture
def shards_of_64(monkeypatch):
    monkeypatch.setattr(encoder_module, "SHARD_SIZE", SHARD)


def _retriever(model) -> DenseRetriever:
    enc = SentenceTransformerEncoder(model=str(model), device="cpu", batch_size=16)
    return DenseRetriever(encoder=enc, index=FaissFlat(use_gpu=False), top_k=10)


def test_two_ray_workers_write_the_single_machine_artifacts(cranfield_slice, runner, shards_of_64, tmp_path):
    _, corpus, model = cranfield_slice
    local = _retriever(model).fit(corpus, ArtifactStore(tmp_path / "local"))
    before = dict(runner.report, per_worker=dict(runner.report["per_worker"]))
    with use_shard_runner(runner):
        dist = _retriever(model).fit(corpus, ArtifactStore(tmp_path / "ray"))
    # every shard went through Ray, split over both workers, none encoded here
    assert _delta(runner, before) == {"shards": 5, "texts": N_DOCS} and runner.report["workers"] == 2
    per_worker = {w: n - before["per_worker"].get(w, 0) for w, n in runner.report["per_worker"].items()}
    assert sorted(per_worker) == [0, 1] and min(per_worker.values()) >= 1
    assert dist.fit_stats.counts["encoder_texts"] == N_DOCS  # the workers' call counts came back
    (l_emb, l_idx), (r_emb, r_idx) = ([a["path"] for a in s.artifacts()] for s in (local, dist))
    # the same artifacts: same keys (path names), identical vectors, byte-identical index
    assert [p.split("/")[-1] for p in (l_emb, l_idx)] == [p.split("/")[-1] for p in (r_emb, r_idx)]
    a = np.load(f"{l_emb}/embeddings.npy", allow_pickle=False)
    b = np.load(f"{r_emb}/embeddings.npy", allow_pickle=False)
    assert a.shape == (N_DOCS, 16) and np.abs(a).sum() > 0
    np.testing.assert_array_equal(a, b)
    assert open(f"{l_idx}/index.faiss", "rb").read() == open(f"{r_idx}/index.faiss", "rb").read()
    ra, rb = local.search(QUERIES), dist.search(QUERIES)
    np.testing.assert_array_equal(ra.doc_idx, rb.doc_idx)
    np.testing.assert_array_equal(ra.scores, rb.scores)


def test_ray_resumes_the_shards_a_single_machine_left(cranfield_slice, runner, shards_of_64, tmp_path, monkeypatch):
    _, corpus, model = cranfield_slice
    store = ArtifactStore(tmp_path)
    calls = {"n": 0}
    real = SentenceTransformerEncoder.encode

    def dies_after_two_shards(self, texts, *args, **kw):
        if calls["n"] == 2:
            raise KeyboardInterrupt
        calls["n"] += 1
        return real(self, texts, *args, **kw)

    monkeypatch.setattr(SentenceTransformerEncoder, "encode", dies_after_two_shards)
    with pytest.raises(KeyboardInterrupt):
        _retriever(model).fit(corpus, store)
    monkeypatch.setattr(SentenceTransformerEncoder, "encode", real)
    before = dict(runner.report)
    with use_shard_runner(runner):
        dist = _retriever(model).fit(corpus, store)
    assert _delta(runner, before) == {"shards": 3, "texts": N_DOCS - 2 * SHARD}  # 0 and 1 came from the local run
    whole = _retriever(model).encoder.encode(corpus.contents(True), "doc")
    emb = np.load(f"{dist.artifacts()[0]['path']}/embeddings.npy", allow_pickle=False)
    np.testing.assert_allclose(emb, whole, atol=1e-6)  # shard-by-shard = all at once (up to batch padding)


def test_a_worker_that_would_encode_differently_is_refused(cranfield_slice, ray_cluster):
    _, corpus, model = cranfield_slice
    enc = SentenceTransformerEncoder(model=str(model), device="cpu")
    spec = {**enc.spec("doc"), "model_fingerprint": "0" * 16}  # what the driver's model would hash to
    job = RemoteShardJob(enc.to_config(), "doc", spec)
    with pytest.raises(ArtifactError, match=r"ray worker 0 on host .* would encode differently .*model_fingerprint"):
        list(RayShardRunner(workers=1).run(job, [(0, corpus.texts[:4])]))
    bad = RemoteShardJob({**enc.to_config(), "model": str(model / "missing")}, "doc", enc.spec("doc"))
    with pytest.raises(StageError, match="ray worker 0 could not load the encoder"):
        list(RayShardRunner(workers=1).run(bad, [(0, corpus.texts[:4])]))


def test_cli_index_with_ray(cranfield_slice, runner, shards_of_64, tmp_path, capfd, monkeypatch):
    import ragopt.distributed
    from ragopt.cli import main
    from ragopt.pipeline_io import save_pipeline

    made = []  # the CLI's runner is the module's (its actors are up already), built from the CLI's options
    monkeypatch.setattr(ragopt.distributed, "RayShardRunner", lambda *a, **kw: made.append((a, kw)) or runner)
    before = dict(runner.report)

    folder, corpus, model = cranfield_slice
    pipe = tmp_path / "tiny_dense.yaml"
    save_pipeline(_retriever(model), pipe)
    args = ["index", "--dataset", str(folder), "--pipeline", str(pipe), "--json", "--no-progress"]
    assert main([*args, "--index-dir", str(tmp_path / "ray"), "--ray", "auto", "--ray-workers", "2"]) == 0
    out = json.loads(capfd.readouterr().out)
    assert made == [(("auto",), {"workers": 2, "cpus_per_worker": 1.0})]
    assert out["ray"]["workers"] == 2 and out["n_docs"] == N_DOCS
    assert out["ray"]["shards"] - before["shards"] == 5 and out["ray"]["texts"] - before["texts"] == N_DOCS
    assert main([*args, "--index-dir", str(tmp_path / "local")]) == 0
    local = json.loads(capfd.readouterr().out)
    assert "ray" not in local
    keys = lambda o: [a["path"].split("/")[-1] for a in o["artifacts"]]
    assert keys(out) == keys(local) and all(a["created"] for a in out["artifacts"])
    assert main([*args, "--ray-workers", "2"]) == 2  # --ray-workers without --ray
    assert "need --ray ADDRESS" in capfd.readouterr().err


# cpus_per_worker NaN passed `<= 0` and reached Ray's int() as a ValueError traceback
@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"workers": 0}, r"^ray\.workers: must be >= 1"),
        ({"cpus_per_worker": -1.0}, r"^ray\.cpus_per_worker: must be a finite number > 0"),
        ({"cpus_per_worker": float("nan")}, r"^ray\.cpus_per_worker: must be a finite number > 0, got nan"),
        ({"cpus_per_worker": float("inf")}, r"^ray\.cpus_per_worker: must be a finite number > 0, got inf"),
        ({"in_flight": 0}, r"^ray\.in_flight: must be >= 1"),
    ],
)
def test_runner_options_are_checked_before_connecting(kwargs, message):
    from ragopt.errors import ConfigError

    with pytest.raises(ConfigError, match=message):
        RayShardRunner(address="127.0.0.1:1", **kwargs)  # refused before any connection is tried


# `ragopt index --ray bogus:1` sat in Ray's reconnect loop for minutes, a warning every 5 s; the address is now probed
@pytest.mark.parametrize(
    ("address", "message"),
    [
        ("127.0.0.1:1", r"could not join the Ray cluster at '127\.0\.0\.1:1': 127\.0\.0\.1:1: Connection refused$"),
        ("ray://127.0.0.1:1", r"at 'ray://127\.0\.0\.1:1': 127\.0\.0\.1:1: Connection refused$"),
        ("no-such-host.invalid:6379", r"at 'no-such-host\.invalid:6379': cannot resolve host 'no-such-host\.invalid'"),
    ],
)
def test_an_address_where_no_cluster_listens_fails_before_ray_init(address, message, monkeypatch):
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", lambda **kw: pytest.fail(f"ray.init was called with {kw}"))
    runner = RayShardRunner(address=address)
    with pytest.raises(StageError, match=message):
        runner._ray()


def test_a_listening_address_is_handed_to_ray_init(monkeypatch):
    import socket

    from ragopt.errors import ConfigError

    calls = []
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", lambda **kw: calls.append(kw))
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        address = f"127.0.0.1:{server.getsockname()[1]}"
        RayShardRunner(address=address)._ray()
        RayShardRunner(address="auto")._ray()  # not probed: Ray resolves it
    assert [c["address"] for c in calls] == [address, "auto"]
    with pytest.raises(ConfigError, match=r"^ray\.address: '127\.0\.0\.1:70000': port 70000 is outside 1\.\.65535"):
        RayShardRunner(address="127.0.0.1:70000")._ray()
    with pytest.raises(ConfigError, match=r"^ray\.connect_timeout: must be a finite number of seconds > 0"):
        RayShardRunner(address="auto", connect_timeout=float("nan"))
