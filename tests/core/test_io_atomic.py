"""The atomic writer: the file gets the usual permissions (umask applied, not mkstemp's 0600), the temporary file
lives beside the target (so the rename never crosses file systems) and nothing is left when writing fails. Added
for surviving mutants of ``ragopt._io.atomic_write`` (benchmarks/MUTATION.md)."""

from __future__ import annotations

import os
import stat

import pytest

from ragopt._io import atomic_write, atomic_write_text


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_written_files_get_the_umask_permissions(tmp_path, umask):
    old = os.umask(umask)
    try:
        path = atomic_write_text(tmp_path / "a.txt", "hello")
        assert os.umask(umask) == umask  # the writer put the process umask back
    finally:
        os.umask(old)
    assert path.read_text() == "hello"
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask


def test_the_temporary_file_is_a_hidden_sibling_and_is_removed_on_failure(tmp_path):
    seen = []

    def save(f):
        f.write(b"partial")
        f.flush()
        seen.extend(os.listdir(tmp_path / "sub"))  # the file being written, while it is written
        raise RuntimeError("disk went away")

    with pytest.raises(RuntimeError):
        atomic_write(tmp_path / "sub" / "b.bin", save)
    (tmp,) = seen
    assert tmp.startswith(".b.bin.") and tmp.endswith(".tmp")
    assert os.listdir(tmp_path / "sub") == []  # neither the target nor the temporary file


def test_a_folder_or_a_file_in_the_way_is_refused_before_anything_is_written(tmp_path):
    from ragopt.errors import ArtifactError

    (tmp_path / "d").mkdir()
    (tmp_path / "f").write_text("keep")
    calls = []
    with pytest.raises(ArtifactError, match=r"cannot write .*/d: it is a folder; name a file$"):
        atomic_write_text(tmp_path / "d", "x")
    with pytest.raises(ArtifactError, match=r"cannot write .*/f/a/b\.txt: .*/f is a file, not a folder$"):
        atomic_write(tmp_path / "f" / "a" / "b.txt", calls.append)
    assert calls == [] and sorted(os.listdir(tmp_path)) == ["d", "f"] and os.listdir(tmp_path / "d") == []
    assert (tmp_path / "f").read_text() == "keep"
