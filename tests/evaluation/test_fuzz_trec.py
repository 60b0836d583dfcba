"""Fuzzing TREC run and qrels files (hypothesis): any content reads, or fails with a one-line DataError naming the
file and line, never another exception; what reads is what was written."""

from __future__ import annotations

import math
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given
from hypothesis import strategies as st

from ragopt.errors import DataError, RagoptError
from ragopt.evaluation.trec import read_qrels_trec, read_run, write_run
from tests.fuzzing import fuzz_settings

pytestmark = pytest.mark.fuzz
SETTINGS = fuzz_settings(100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
_DIR = Path(tempfile.mkdtemp(prefix="ragopt-fuzz-trec-"))

field = st.one_of(
    st.sampled_from(["q1", "q2", "Q0", "d1", "d2", "0", "1", "-3", "2.5", "nan", "inf", "1e999", "x", "0x1f"]),
    st.text(alphabet=st.characters(blacklist_categories=("Zs", "Cc")), min_size=1, max_size=6),
)
line = st.one_of(st.lists(field, min_size=0, max_size=8).map(" ".join), st.text(max_size=30))


@SETTINGS
@given(st.lists(line, max_size=8), st.sampled_from([read_run, read_qrels_trec]), st.booleans())
def test_any_file_reads_or_fails_naming_file_and_line(lines, reader, damage):
    path = _DIR / "fuzz.trec"
    raw = "\n".join(lines).encode("utf-8", "surrogatepass")
    path.write_bytes(raw + (b"\xff\n" if damage else b""))
    try:
        table = reader(path)
    except DataError as e:
        assert str(e).startswith(f"{path}:"), f"the error does not name file and line: {e}"
        assert "\n" not in str(e), f"the error is not one line: {e!r}"
        return
    except RagoptError as e:  # pragma: no cover - the contract is DataError
        raise AssertionError(f"expected DataError, got {type(e).__name__}: {e}") from e
    assert all(isinstance(q, str) and isinstance(row, dict) for q, row in table.items())


@SETTINGS
@given(
    st.dictionaries(
        st.text(alphabet="abcxyz0123456789-_.", min_size=1, max_size=5),
        st.dictionaries(
            st.text(alphabet="abcdef0123456789#:", min_size=1, max_size=5),
            st.floats(allow_nan=False, allow_infinity=False, width=32),
            min_size=1,
            max_size=5,
        ),
        max_size=5,
    )
)
def test_written_runs_read_back(run):
    path = _DIR / "roundtrip.trec"
    write_run(run, path)
    back = read_run(path)
    assert set(back) == set(run)
    for q, row in run.items():
        assert set(back[q]) == set(row)
        for d, s in row.items():
            assert math.isclose(back[q][d], s, rel_tol=1e-6, abs_tol=1e-30), (q, d, s, back[q][d])
