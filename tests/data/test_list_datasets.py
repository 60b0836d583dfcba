"""list_datasets: the dataset folders on the search path, by name, first one wins."""

from __future__ import annotations

import gzip

from ragopt.data import dataset_search_path, list_datasets, resolve_dataset


def _dataset(folder, gz=False):
    folder.mkdir(parents=True)
    if gz:
        with gzip.open(folder / "corpus.jsonl.gz", "wt", encoding="utf-8") as f:
            f.write('{"_id": "d", "text": "x"}\n')
    else:
        (folder / "corpus.jsonl").write_text('{"_id": "d", "text": "x"}\n', encoding="utf-8")


def test_scan_order_first_wins_and_gz(tmp_path, monkeypatch):
    first, second = tmp_path / "first", tmp_path / "second"
    _dataset(first / "zeta")
    _dataset(first / "alpha")
    _dataset(second / "alpha")  # shadowed by first/alpha
    _dataset(second / "beta", gz=True)
    (second / "empty").mkdir()  # no corpus: not a dataset
    (second / "notes.txt").write_text("not a folder")
    monkeypatch.setenv("RAGOPT_DATA_PATH", f"{first}:{tmp_path / 'missing'}:{second}")
    found = {k: v for k, v in list_datasets().items() if v.parent in (first, second)}
    assert found == {"alpha": first / "alpha", "zeta": first / "zeta", "beta": second / "beta"}
    assert list(found) == ["alpha", "zeta", "beta"]  # sorted within each search folder, folders in order
    assert dataset_search_path()[:3] == [first, tmp_path / "missing", second]
    assert resolve_dataset("alpha") == found["alpha"]  # the same rule as resolving a name
    assert resolve_dataset("beta") == found["beta"]
