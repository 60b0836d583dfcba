"""The SPLADE fast path (ragopt.retrievers.splade_pooling) against sentence-transformers' own modules.

The reference is always a second, unpatched ``SparseEncoder`` loaded from the same folder, so every expected vector
comes from the library, not from ragopt."""

from __future__ import annotations

import json

import pytest

splade_mod = pytest.importorskip("ragopt.retrievers.splade")
if splade_mod._packaged_splade_tiny() is None:
    pytest.skip("the packaged SPLADE-tiny is not installed", allow_module_level=True)
st = pytest.importorskip("sentence_transformers")
torch = pytest.importorskip("torch")

from ragopt._imports import optional  # noqa: E402
from ragopt.retrievers import splade_pooling  # noqa: E402
from ragopt.retrievers.splade_pooling import TOLERANCE, install_fast_pooling  # noqa: E402

TEXTS = [
    "The cat sat on the mat.",
    "Boundary layer transition on a flat plate at supersonic speeds, with heat transfer and pressure gradients. " * 4,
    "x",
    "What similarity laws must be obeyed when constructing aeroelastic models of heated high speed aircraft?",
]


def _encoder(pooling: dict | None = None):
    from sentence_transformers.sparse_encoder import SparseEncoder

    # sentence-transformers 6 moved the modules from .models (5.x, deprecated since) to .modules
    modules = optional("sentence_transformers.sparse_encoder.modules") or optional(
        "sentence_transformers.sparse_encoder.models"
    )
    MLMTransformer, SpladePooling = modules.MLMTransformer, modules.SpladePooling
    path = str(splade_mod._packaged_splade_tiny())
    if pooling is None:
        model = SparseEncoder(path, device="cpu")
    else:
        model = SparseEncoder(modules=[MLMTransformer(path), SpladePooling(**pooling)], device="cpu")
    return model.eval()


def _vectors(model, texts, kind="doc"):
    fn = model.encode_document if kind == "doc" else model.encode_query
    with torch.inference_mode():
        return fn(texts, batch_size=8, convert_to_tensor=True, convert_to_sparse_tensor=False)


def _assert_same(got, want):
    """Equal up to another summation order of the projection (splade_pooling's docstring bounds it), with the same
    non-zero terms where the value is clear of that bound."""
    assert got.shape == want.shape
    torch.testing.assert_close(got, want, rtol=TOLERANCE, atol=TOLERANCE)
    clear = want.abs() > 2 * TOLERANCE
    assert torch.equal((got > 0)[clear], (want > 0)[clear])


@pytest.fixture(scope="module")
def stock():
    return _encoder()


@pytest.fixture(scope="module")
def fast():
    model = _encoder()
    assert install_fast_pooling(model)
    return model


@pytest.mark.parametrize("kind", ["doc", "query"])
def test_fast_path_reproduces_the_stock_vectors(stock, fast, kind):
    got, want = _vectors(fast, TEXTS, kind), _vectors(stock, TEXTS, kind)
    _assert_same(got, want)
    assert (want > 0).sum(1).min() > 0  # a non-trivial comparison: every text has terms


def test_fast_path_on_cranfield_documents(stock, fast, data_dir):
    """Real documents of varied length (padding up to 512 tokens, truncation): the same vectors."""
    with (data_dir / "cranfield" / "corpus.jsonl").open() as fh:
        docs = [json.loads(line) for _, line in zip(range(48), fh)]
    texts = [(d.get("title") or "") + " " + d["text"] for d in docs]
    _assert_same(_vectors(fast, texts), _vectors(stock, texts))


def test_the_fast_path_never_projects_padding_and_defers_the_bias(fast, monkeypatch):
    """The vocabulary projection runs once per text on exactly its real tokens, without the bias."""
    calls = []
    real = torch.nn.functional.linear

    def counting(x, w, b=None):
        if w.shape[0] == fast[1]._ragopt_decoder.out_features:
            calls.append((tuple(x.shape), b is None))
        return real(x, w, b)

    monkeypatch.setattr(torch.nn.functional, "linear", counting)
    texts = ["a b c", "one two three four five six seven eight"]
    lengths = [len(fast.tokenizer(t)["input_ids"]) for t in texts]
    _vectors(fast, texts)
    assert sorted(calls) == [((lengths[0], 128), True), ((lengths[1], 128), True)]


@pytest.mark.parametrize(
    "pooling", [{"pooling_strategy": "max", "activation_function": "log1p_relu"}, {"pooling_strategy": "max"}]
)
def test_activations_and_a_model_built_from_modules(pooling):
    model, reference = _encoder(pooling), _encoder(pooling)
    assert install_fast_pooling(model)
    _assert_same(_vectors(model, TEXTS), _vectors(reference, TEXTS))


def test_sum_pooling_is_left_alone():
    model = _encoder({"pooling_strategy": "sum"})
    assert not install_fast_pooling(model)
    assert "forward" not in vars(model[1]) and "forward" not in vars(model[0].auto_model.get_output_embeddings())


def test_left_padding_and_training_mode_take_the_stock_path(stock, fast):
    fast.tokenizer.padding_side = stock.tokenizer.padding_side = "left"
    try:
        _assert_same(_vectors(fast, TEXTS), _vectors(stock, TEXTS))
    finally:
        fast.tokenizer.padding_side = stock.tokenizer.padding_side = "right"
    model, reference = _encoder(), _encoder()
    assert install_fast_pooling(model)
    for m in (model, reference):  # training mode for the two patched modules only: no dropout anywhere
        m[0].auto_model.get_output_embeddings().train()
        m[1].train()
    features = model.tokenize(TEXTS[:2]) if hasattr(model, "tokenize") else model.preprocess(TEXTS[:2])
    with torch.no_grad():
        got = model(dict(features))
        want = reference(dict(features))
    assert got["token_embeddings"].shape[-1] == model[0].auto_model.get_output_embeddings().out_features
    _assert_same(got["sentence_embedding"], want["sentence_embedding"])


def test_a_patch_that_changes_the_vectors_is_undone(monkeypatch, stock):
    """install_fast_pooling checks the patched model against the stock modules on a probe batch."""
    exact = splade_pooling._pooling_forward

    def off_by_a_little(self, features):
        out = exact(self, features)
        out["sentence_embedding"] = out["sentence_embedding"] * 1.001
        return out

    monkeypatch.setattr(splade_pooling, "_pooling_forward", off_by_a_little)
    model = _encoder()
    assert not install_fast_pooling(model)
    assert "forward" not in vars(model[1]) and not hasattr(model[1], "_ragopt_decoder")
    assert torch.equal(_vectors(model, TEXTS), _vectors(stock, TEXTS))


def test_the_retriever_stage_uses_the_fast_path():
    model = splade_mod.SpladeRetriever().load_model()
    assert "forward" in vars(model[1]) and hasattr(model[1], "_ragopt_decoder")
