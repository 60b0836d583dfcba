"""The GGUF header reader against the gguf library (ggml's own Python package): same scalar values on files it
writes and on the packaged SmolLM2 file; arrays skipped; damaged files refused by name."""

from __future__ import annotations

import pytest

from ragopt.errors import ArtifactError
from ragopt.llm.gguf_meta import read_metadata

gguf = pytest.importorskip("gguf")
np = pytest.importorskip("numpy")


def _reference(path) -> dict:
    """Every non-array key-value of ``path`` as gguf.GGUFReader reads it."""
    out = {}
    for key, field in gguf.GGUFReader(path).fields.items():
        if key.startswith("GGUF.") or field.types[0] == gguf.GGUFValueType.ARRAY:
            continue
        out[key] = field.contents()
    return out


def _write(path, *, with_arrays: bool = True) -> None:
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_uint32("test.u32", 4_000_000_000)
    w.add_int32("test.i32", -7)
    w.add_uint64("test.u64", 2**63 + 5)
    w.add_int64("test.i64", -(2**40))
    w.add_float32("test.f32", 0.25)
    w.add_float64("test.f64", 1e-300)
    w.add_bool("tokenizer.ggml.add_bos_token", False)
    w.add_bool("tokenizer.ggml.add_eos_token", True)
    w.add_string("test.str", "Grüße, [1]")
    if with_arrays:  # the reader must step over these to reach what follows
        w.add_array("test.strings", ["a", "", "ünïcode", "x" * 300])
        w.add_array("test.ints", [1, 2, 3])
        w.add_array("test.nested", [[1, 2], [3]])
    w.add_uint8("test.after", 9)
    w.add_tensor("t", np.zeros((2, 3), dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def test_same_scalars_as_the_gguf_library_on_a_written_file(tmp_path):
    path = tmp_path / "m.gguf"
    _write(path)
    mine = read_metadata(path)
    assert mine == _reference(path)
    assert mine["test.u32"] == 4_000_000_000 and mine["test.i64"] == -(2**40) and mine["test.u64"] == 2**63 + 5
    assert mine["test.f32"] == 0.25 and mine["test.f64"] == 1e-300 and mine["test.str"] == "Grüße, [1]"
    assert mine["tokenizer.ggml.add_bos_token"] is False and mine["tokenizer.ggml.add_eos_token"] is True
    assert mine["test.after"] == 9  # read after the arrays: they were skipped by their exact length
    assert not {"test.strings", "test.ints", "test.nested"} & set(mine)


def test_same_scalars_as_the_gguf_library_on_the_packaged_smollm2():
    from tests.conftest import smollm2_installed

    if not smollm2_installed():
        pytest.skip("SmolLM2 not installed")
    from ragopt.llm.models import resolve_llm

    path = resolve_llm("smollm2-135m-instruct").gguf_path
    mine = read_metadata(path)
    assert mine == _reference(path)
    # what llama.cpp reads to decide on a BOS: SmolLM2's file says none
    assert mine["tokenizer.ggml.add_bos_token"] is False and mine["tokenizer.ggml.bos_token_id"] == 1


@pytest.mark.parametrize(
    "damage, why",
    [
        (lambda b: b"", "cannot read GGUF metadata"),
        (lambda b: b"PK\x03\x04" + b[4:], "no GGUF magic"),
        (lambda b: b[:4] + (99).to_bytes(4, "little") + b[8:], "version 99"),
        (lambda b: b[:60], "cut short|runs past the end"),
    ],
)
def test_damaged_files_are_refused_naming_the_file(tmp_path, damage, why):
    good = tmp_path / "m.gguf"
    _write(good, with_arrays=False)
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(damage(good.read_bytes()))
    with pytest.raises(ArtifactError, match=why) as e:
        read_metadata(bad)
    assert str(bad) in str(e.value)
    with pytest.raises(ArtifactError, match="cannot read GGUF metadata"):
        read_metadata(tmp_path / "missing.gguf")
