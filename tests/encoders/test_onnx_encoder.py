"""The ONNX Runtime backend of the sentence_transformer encoder: fp32 vectors equal to sentence-transformers' own
(float rounding), int8 vectors close to them, the export stored once and keyed apart from torch's vectors, models it
cannot run refused by name, bad settings refused before loading, and retrieval quality on cranfield (slow)."""

from __future__ import annotations

import numpy as np
import pytest

from ragopt.encoders import SentenceTransformerEncoder
from ragopt.errors import ConfigError
from ragopt.store import ArtifactStore
from ragopt.types import Stats

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

TEXTS = [
    "A cat sits on the mat.",
    "A kitten is sitting on a rug.",
    "Stock markets fell sharply today.",
    "aerodynamic heating of a blunt body in hypersonic flow " * 8,  # longer than max_length 8, padded batches
    "x",
]


def test_bad_settings_are_refused_before_any_model_is_loaded():
    with pytest.raises(ConfigError, match="precision.*int8 runs on the onnx backend"):
        SentenceTransformerEncoder(precision="int8")
    with pytest.raises(ConfigError, match="precision.*not fp16"):
        SentenceTransformerEncoder(backend="onnx", precision="fp16")
    with pytest.raises(ConfigError, match="device.*backend onnx runs on the CPU"):
        SentenceTransformerEncoder(backend="onnx", device="cuda")
    with pytest.raises(ConfigError, match="backend"):
        SentenceTransformerEncoder(backend="tensorrt")


@pytest.mark.slow
def test_fp32_vectors_equal_sentence_transformers_and_the_export_is_stored_once(tmp_path):
    store = ArtifactStore(tmp_path)
    torch_enc = SentenceTransformerEncoder(device="cpu", batch_size=2)
    onnx_enc = SentenceTransformerEncoder(backend="onnx", batch_size=2).use_store(store)
    ref = torch_enc.encode(TEXTS)
    stats = Stats()
    got = onnx_enc.encode(TEXTS, stats=stats)
    assert got.shape == ref.shape == (5, 384) and got.dtype == np.float32
    np.testing.assert_allclose(got, ref, atol=1e-5)  # one graph, same weights: float rounding only
    assert stats.counts == {"encoder_texts": 5, "encoder_batches": 3}
    # the model's own max_seq_length is honoured, as sentence-transformers does it
    short_t = SentenceTransformerEncoder(device="cpu", max_length=8).encode(TEXTS[3:4])
    short_o = SentenceTransformerEncoder(backend="onnx", max_length=8).use_store(store).encode(TEXTS[3:4])
    np.testing.assert_allclose(short_o, short_t, atol=1e-5)
    assert not np.allclose(short_o, got[3:4], atol=1e-3)
    # vectors of another backend are another cache key; torch's key is what it was before backends existed
    assert "backend" not in torch_enc.spec() and onnx_enc.spec() == {**torch_enc.spec(), "backend": "onnx"}
    _, art = onnx_enc.onnx_encoder()
    assert not art.created and art.manifest["precision"] == "fp32"  # exported by the first encode, reused since
    assert [a.path for a in store.list("enc-onnx")] == [art.path]


@pytest.mark.slow
def test_int8_vectors_stay_close_to_fp32_and_keep_the_neighbours(tmp_path):
    store = ArtifactStore(tmp_path)
    ref = SentenceTransformerEncoder(device="cpu").encode(TEXTS)
    enc = SentenceTransformerEncoder(backend="onnx", precision="int8").use_store(store)
    got = enc.encode(TEXTS)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, rtol=1e-5)
    cos = (got * ref).sum(axis=1)
    assert cos.min() > 0.95, cos  # int8 weights per output channel: a small rotation, not another vector
    sims = got @ got.T
    assert sims[0, 1] > 0.5 > sims[0, 2] and sims[0, 1] > sims[1, 2] + 0.3  # the fp32 test's neighbours
    spec = enc.spec()
    assert spec["precision"] == "int8" and spec["quantization"]["weight_bits"] in (7, 8)
    _, art = enc.onnx_encoder()
    assert art.manifest["quantization"] == spec["quantization"]


@pytest.mark.slow
def test_a_model_with_modules_the_backend_cannot_run_is_refused_by_name(tmp_path):
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.models import Dense

    base = SentenceTransformerEncoder(device="cpu").load_model()
    folder = tmp_path / "with-dense"
    SentenceTransformer(modules=[base[0], base[1], Dense(384, 64)], device="cpu").save(str(folder))
    enc = SentenceTransformerEncoder(model=str(folder), backend="onnx").use_store(ArtifactStore(tmp_path / "s"))
    with pytest.raises(ConfigError, match=r"has the modules \['Transformer', 'Pooling', 'Dense'\].*backend torch"):
        enc.encode(["hello"])
    assert not (tmp_path / "s" / "enc-onnx").exists() or not any((tmp_path / "s" / "enc-onnx").iterdir())


@pytest.mark.slow
def test_cranfield_quality_with_int8_weights(data_dir, tmp_path):
    """Around the data README's 0.382 for this model (torch and ONNX fp32: 0.3817): int8 weights measured 0.3794
    with 8-bit weights (VNNI CPUs) and 0.3752 with 7-bit ones (the others), so the window is wider below than the
    torch test's 0.37-0.40."""
    from ragopt.config import from_config
    from ragopt.evaluation.run import evaluate_pipeline

    if not (data_dir / "cranfield" / "corpus.jsonl").is_file():
        pytest.skip("cranfield not in the shared data")
    pipe = from_config(
        {"type": "dense", "encoder": {"type": "sentence_transformer", "backend": "onnx", "precision": "int8"}}
    )
    report = evaluate_pipeline(pipe, str(data_dir / "cranfield"), store=ArtifactStore(tmp_path), progress=False)
    assert 0.365 <= report.metrics["ndcg@10"] <= 0.40, report.metrics
