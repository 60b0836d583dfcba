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
    prompt = st.build_prompt(tok, "the old tower", st._doc_ids(tok, ["river stone", "gold tower", "blue lake"]))
    logits, scores = st.forward_with_answer(model, prompt, tok("2]", add_special_tokens=False)["input_ids"], 1)
    assert scores.requires_grad and logits.shape[0] == len(tok("2]", add_special_tokens=False)["input_ids"])
    np.testing.assert_allclose(scores.detach().numpy(), st.scores(prompt), rtol=1e-5, atol=1e-7)
