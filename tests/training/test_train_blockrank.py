"""`train_blockrank` on a tiny randomly initialised Llama (from tests/rerankers/test_blockrank.py) and a tiny BEIR
dataset: the artifact holds a model the blockrank stage loads (its layout checked), a disjoint held-out query split,
loss curves; the auxiliary loss moves attention towards the relevant block; the CLI subcommand."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ragopt.errors import ConfigError
from ragopt.llm.transformers_backend import TransformersLLM
from ragopt.rerankers.blockrank import LAYOUT_FILE, BlockRankReranker
from ragopt.store import ArtifactStore
from ragopt.training.blockrank import heldout_query_ids, train_blockrank

pytest.importorskip("torch")
pytest.importorskip("transformers")

from tests.rerankers.test_blockrank import WORDS, _save


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    return _save(tmp_path_factory.mktemp("tiny-train"), "llama", layers=2)


@pytest.fixture(scope="module")
def tiny_dataset(tmp_path_factory) -> Path:
    """24 documents of known words, 12 queries, one relevant document each (BEIR layout)."""
    d = tmp_path_factory.mktemp("tinyds-br")
    w = [x for x in WORDS if x != "gold"]
    docs = [
        {"_id": f"d{i}", "title": "", "text": " ".join(w[(i * 3 + k) % len(w)] for k in range(5))} for i in range(24)
    ]
    queries = [{"_id": f"q{i}", "text": " ".join(w[(i * 3 + k) % len(w)] for k in range(2))} for i in range(12)]
    (d / "corpus.jsonl").write_text("".join(json.dumps(x) + "\n" for x in docs))
    (d / "queries.jsonl").write_text("".join(json.dumps(x) + "\n" for x in queries))
    (d / "qrels").mkdir()
    rows = [f"q{i}\td{i}\t1" for i in range(12)]
    (d / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n" + "\n".join(rows) + "\n")
    return d


def _train(model, ds, store, **kw):
    args = dict(train_fraction=0.5, seed=0, n_docs=3, negatives_depth=8, steps=6, lr=1e-3, layer=1, chat=False)
    return train_blockrank(str(model), str(ds), store=store, progress=False, **{**args, **kw})


def test_artifact_loads_in_the_stage_with_its_layout(tiny_model, tiny_dataset, tmp_path):
    store = ArtifactStore(tmp_path / "s")
    art = _train(tiny_model, tiny_dataset, store)
    assert art.created
    held, train = heldout_query_ids(art.path), (art.path / "train_queries.txt").read_text().split()
    assert len(held) == 6 and len(train) == 6 and not set(held) & set(train)
    info = json.loads((art.path / "training.json").read_text())
    assert len(info["lm_loss"]) == 6 and len(info["aux_loss"]) == 6 and info["layer"] == 1
    hits = info["train_attention_hit"]  # one 0/1 per step, the figures of the record read from it
    assert len(hits) == 6 and set(hits) <= {0, 1}
    assert info["train_attention_p1_first_20"] == pytest.approx(sum(hits) / 6, abs=1e-3)
    assert json.loads((art.path / "model" / LAYOUT_FILE).read_text())["layout"]["sparse"] is True
    assert not _train(tiny_model, tiny_dataset, store).created  # same spec: reused
    llm = TransformersLLM(model=str(art.path / "model"), device="cpu").use_store(store)
    from ragopt.data import load_dataset

    corpus = load_dataset(str(tiny_dataset)).corpus
    assert BlockRankReranker(llm=llm, layer=1, chat=False).fit(corpus, store).is_fitted
    with pytest.raises(ConfigError, match="another block layout"):
        BlockRankReranker(llm=llm, layer=1, chat=False, sparse=False).fit(corpus, store)


def test_auxiliary_loss_raises_attention_to_the_relevant_block(tiny_model, tiny_dataset, tmp_path):
    """Same prompts and steps: the InfoNCE loss at the end of training is lower with the auxiliary weight on
    than off (where only the LM loss trains)."""
    store = ArtifactStore(tmp_path / "s")
    on = json.loads(
        (_train(tiny_model, tiny_dataset, store, aux_weight=1.0, steps=12).path / "training.json").read_text()
    )
    off = json.loads(
        (_train(tiny_model, tiny_dataset, store, aux_weight=0.0, steps=12).path / "training.json").read_text()
    )
    assert sum(on["aux_loss"][-4:]) < sum(off["aux_loss"][-4:])


def test_bad_arguments(tiny_model, tiny_dataset, tmp_path):
    store = ArtifactStore(tmp_path / "s")
    with pytest.raises(ConfigError, match="train_fraction"):
        _train(tiny_model, tiny_dataset, store, train_fraction=1.0)
    with pytest.raises(ConfigError, match="n_docs"):
        _train(tiny_model, tiny_dataset, store, n_docs=1)


def test_cli_train_blockrank(tiny_model, tiny_dataset, tmp_path, capfd):
    from ragopt.cli import main

    rc = main(
        [
            "train",
            "blockrank",
            "--base",
            str(tiny_model),
            "--dataset",
            str(tiny_dataset),
            "--steps",
            "2",
            "--n-docs",
            "3",
        ]
        + ["--layer", "1", "--train-fraction", "0.5", "--index-dir", str(tmp_path / "idx"), "--json"]
    )
    out = json.loads(capfd.readouterr().out)
    assert rc in (0, None) and out["created"] and out["layer"] == 1 and Path(out["model"]).is_dir()


def test_training_forward_matches_the_stage_scores(tiny_model, tmp_path):
    """The differentiable scores the auxiliary loss trains are the stage's inference scores (answer tokens come
    after the query rows, so they do not change them), and they carry gradients."""
    import numpy as np

    store = ArtifactStore(tmp_path / "s")
    llm = TransformersLLM(model=str(tiny_model), device="cpu").use_store(store)
    st = BlockRankReranker(llm=llm, layer=1, chat=False)
    model, tok = st.model()
    prompt = st.build_prompt(tok, "the old tower", st.doc_token_ids(tok, ["river stone", "gold tower", "blue lake"]))
    logits, scores = st.forward_with_answer(model, prompt, tok("2]", add_special_tokens=False)["input_ids"], 1)
    assert scores.requires_grad and logits.shape[0] == len(tok("2]", add_special_tokens=False)["input_ids"])
    np.testing.assert_allclose(scores.detach().numpy(), st.scores(prompt), rtol=1e-5, atol=1e-7)


def test_lora_trains_adapters_and_saves_merged_weights(tiny_model, tiny_dataset, tmp_path):
    """``lora=True``: only low-rank adapters on the attention projections train, and they are merged into the saved
    weights: the artifact has the base model's parameter names and shapes (the stage loads it like a full
    fine-tune), the attention projections moved and every other weight (embeddings, MLPs, norms) is the base's."""
    pytest.importorskip("peft")
    import torch
    from safetensors.torch import load_file

    store = ArtifactStore(tmp_path / "s")
    art = _train(tiny_model, tiny_dataset, store, lora=True, lr=1e-2, steps=8)
    base = load_file(str(next(Path(tiny_model).glob("*.safetensors"))))
    tuned = load_file(str(next((art.path / "model").glob("*.safetensors"))))
    assert set(tuned) == set(base) and all(tuned[k].shape == base[k].shape for k in base)
    moved = {k for k in base if not torch.equal(base[k], tuned[k])}
    projections = {k for k in base if any(p in k for p in ("q_proj", "k_proj", "v_proj", "o_proj"))}
    assert moved and moved <= projections
    assert json.loads((art.path / "training.json").read_text())["lm_loss"]
    llm = TransformersLLM(model=str(art.path / "model"), device="cpu").use_store(store)
    from ragopt.data import load_dataset

    assert BlockRankReranker(llm=llm, layer=1, chat=False).fit(load_dataset(str(tiny_dataset)).corpus, store).is_fitted


@pytest.mark.slow
def test_lora_on_smollm2_and_nq_open(smollm2, session_store):
    """The packaged SmolLM2 fine-tuned with LoRA for a few steps on real queries (BM25-mined negatives): the
    merged artifact changes only the attention projections, holds out the seeded 40% of the sampled queries and
    scores real candidates in the stage, its layer recorded in the layout."""
    import numpy as np
    import torch
    from safetensors.torch import load_file

    from ragopt.data import load_dataset
    from ragopt.types import Batch
    from tests.conftest import shared_dataset

    path = shared_dataset("nq-open-oracle-dev")
    store = session_store  # the GGUF -> transformers conversion is shared with the other SmolLM2 tests
    art = train_blockrank(
        "smollm2-135m-instruct", str(path), max_queries=10, n_docs=4, steps=4, layer=15, lora=True,
        lr=1e-3, max_doc_tokens=24, store=store, progress=False,
    )  # fmt: skip
    info = json.loads((art.path / "training.json").read_text())
    assert len(info["lm_loss"]) == 4 and all(np.isfinite(info["lm_loss"])) and info["layer"] == 15
    held = set(heldout_query_ids(art.path))
    train = set((art.path / "train_queries.txt").read_text().split())
    assert len(train) == 10 and not held & train
    base = dict(smollm2.load()[0].state_dict())
    tuned = load_file(str(next((art.path / "model").glob("*.safetensors"))))
    moved = {k for k in tuned if not torch.equal(tuned[k], base[k].to(tuned[k].dtype))}
    assert moved and all(any(p in k for p in ("q_proj", "k_proj", "v_proj", "o_proj")) for k in moved)
    ds = load_dataset(str(path))
    queries = ds.queries_for("test")
    queries = queries[[i for i, q in enumerate(queries.ids) if q in held][:2]]
    from ragopt.pipeline_io import load_pipeline

    bm25 = load_pipeline("bm25").set_params(**{"stages.0.top_k": 10})
    bm25.fit(ds.corpus, store)
    first = bm25.search(queries)
    llm = TransformersLLM(model=str(art.path / "model"), device="cpu").use_store(store)
    st = BlockRankReranker(llm=llm, depth=5, layer=15, max_doc_tokens=24).fit(first.corpus, store)
    out = st.transform(Batch(first.queries, first.corpus, first.doc_idx, first.scores))
    for r in range(2):
        assert sorted(out.doc_idx[r, :5].tolist()) == sorted(first.doc_idx[r, :5].tolist())
        assert out.scores[r, :5].sum() == pytest.approx(1.0, abs=1e-4)
