"""Components as validated configs: round trips, unknown keys, types, bounds, nested paths."""

from __future__ import annotations

import pytest
import yaml

from ragopt.config import Component, from_config, param
from ragopt.errors import ConfigError, StageError
from ragopt.ops import Cutoff
from ragopt.pipeline import Pipeline, Stage
from ragopt.registry import available, register, resolve
from ragopt.retrievers.bm25 import BM25, BM25Retriever
from ragopt.types import Corpus

TINY = Corpus(["d1", "d2"], ["a b", "c d"])


@register("test_scaler")
class Scaler(Stage):
    """Multiplies candidate scores (a tiny reranker for tests)."""

    requires = frozenset({"queries", "candidates"})
    provides = frozenset({"candidates"})
    factor: float = param(1.0, ge=0.0)
    mode: str = param("mul", choices=("mul", "add"))

    def transform(self, batch):
        s = batch.scores * self.factor if self.mode == "mul" else batch.scores + self.factor
        return batch.with_candidates(batch.doc_idx, s)


# Components that cannot be built from defaults (a required parameter, or a container that needs stages), each
# with a minimal valid config to round-trip instead. Nothing registered is skipped: a new component either
# builds from defaults or gets an entry here (test_every_registered_component_round_trips_through_yaml fails).
REQUIRED_PARAMS_EXAMPLES: dict[str, dict] = {
    "pipeline": {"stages": [{"type": "bm25"}, {"type": "cutoff", "k": 5}]},  # at least one stage
    "rrf": {"inputs": [{"type": "bm25"}, {"type": "bm25", "k1": 1.2}]},  # at least two inputs
    "weighted": {"inputs": [{"type": "bm25"}, {"type": "bm25", "k1": 1.2}], "weights": [0.3, 0.7]},
    "cross_encoder": {"model": "org/some-cross-encoder", "depth": 20},  # the model has no sensible default
    "cur": {"scorer": {"type": "cross_encoder", "model": "org/some-cross-encoder"}},  # needs a scorer stage
    "openai": {"model": "gpt-x", "base_url": "http://127.0.0.1:1/v1"},  # LLM backends: a model is required
    "transformers": {"model": "some/causal-lm"},
    "llama_cpp": {"model": "smollm2-135m-instruct"},  # a packaged alias (a path must exist)
}


def test_every_registered_component_round_trips_through_yaml():
    missing_backends = []
    done = set()
    for name in available():
        try:
            cls = resolve(name)
        except ImportError as e:  # an optional extra is not installed: say so, never skip silently
            missing_backends.append(f"{name} ({e})")
            continue
        if name in REQUIRED_PARAMS_EXAMPLES:
            with pytest.raises((ConfigError, TypeError)):
                cls()  # the example is needed: default construction must fail, or the entry goes
            obj = from_config({"type": name, **REQUIRED_PARAMS_EXAMPLES[name]})
        else:
            obj = cls()  # any failure here is a failure of the test, not a skip
        assert type(obj) is cls, name
        cfg = obj.to_config()
        again = from_config(yaml.safe_load(yaml.safe_dump(cfg)))
        assert again == obj, name
        assert again.to_config() == cfg, name
        done.add(name)
    assert set(REQUIRED_PARAMS_EXAMPLES) <= set(available()), "examples for unregistered names"
    if missing_backends:
        pytest.skip(f"round-tripped {len(done)} components; extras missing for: {', '.join(missing_backends)}")
    assert done == set(available())


def test_bm25_round_trip_and_equality():
    a = BM25(k1=1.2, b=0.75, top_k=50)
    cfg = a.to_config()
    assert cfg["type"] == "bm25" and cfg["k1"] == 1.2 and cfg["top_k"] == 50
    b = from_config(cfg)
    assert a == b and a is not b
    assert a != BM25(k1=1.3, b=0.75, top_k=50)
    assert repr(a).startswith("BM25Retriever(")  # BM25 is the old name, kept as an alias
    assert BM25 is BM25Retriever and from_config({"type": "bm25"}).__class__ is BM25Retriever


def test_unknown_key_names_its_path_and_suggests():
    with pytest.raises(ConfigError) as e:
        from_config({"type": "pipeline", "stages": [{"type": "bm25", "k_1": 0.9}]})
    assert e.value.path == "stages[0].k_1"
    assert "did you mean 'k1'" in str(e.value)


def test_unknown_type_and_missing_type():
    with pytest.raises(ConfigError, match=r"stages\[1\]\.type: unknown component type 'bm52'.*'bm25'"):
        from_config({"type": "pipeline", "stages": [{"type": "bm25"}, {"type": "bm52"}]})
    with pytest.raises(ConfigError, match="missing 'type'"):
        from_config({"k1": 1.0})


@pytest.mark.parametrize(
    "key,value,message",
    [
        ("k1", "high", "expected a number"),
        ("b", 1.5, "must be <= 1.0"),
        ("top_k", 0, "must be >= 1"),
        ("top_k", 2.5, "expected an integer"),
        ("backend", "lucene", "must be one of"),
        ("lower", "yes", "expected a boolean"),
    ],
)
def test_type_and_bound_errors(key, value, message):
    with pytest.raises(ConfigError, match=message) as e:
        from_config({"type": "bm25", key: value})
    assert e.value.path == key


def test_ints_are_accepted_for_floats_and_integral_floats_for_ints():
    m = from_config({"type": "bm25", "k1": 1, "top_k": 100.0})
    assert m.k1 == 1.0 and isinstance(m.k1, float)
    assert m.top_k == 100 and isinstance(m.top_k, int)


def test_every_registered_stage_refuses_to_fit_something_that_is_not_a_corpus():
    # a Dataset passed for its corpus failed deep inside ("'Dataset' object has no attribute 'fingerprint'"); the
    # check runs before any work (no model is loaded: the cross-encoder's model here does not exist)
    class HasCorpus:
        corpus = TINY

    checked = []
    for name in available():
        try:
            cls = resolve(name)
        except ImportError:
            continue  # an optional extra is missing: the round-trip test above says so
        if not issubclass(cls, Stage):
            continue
        obj = from_config({"type": name, **REQUIRED_PARAMS_EXAMPLES.get(name, {})})
        with pytest.raises(StageError, match=rf"^{name}: fit takes a Corpus, got HasCorpus \(pass dataset\.corpus\)$"):
            obj.fit(HasCorpus())
        with pytest.raises(StageError, match=rf"^{name}: fit takes a Corpus, got list$"):
            obj.fit(["a text"])
        checked.append(name)
    assert {"bm25", "cutoff", "pipeline", "cross_encoder", "generate", "chunker"} <= set(checked)


def test_nested_get_and_set_params_by_dotted_path():
    p = BM25() >> Scaler(factor=2.0) >> Cutoff(k=5)
    params = p.get_params()
    assert params["stages.0.k1"] == 0.9
    assert params["stages.1.factor"] == 2.0
    p.set_params(**{"stages.0.k1": 1.4, "stages__2__k": 3})
    assert p.stages[0].k1 == 1.4 and p.stages[2].k == 3
    with pytest.raises(ConfigError, match="stages.0.kk"):
        p.set_params(**{"stages.0.kk": 1})
    with pytest.raises(ConfigError, match="must be <= 1.0"):
        p.set_params(**{"stages.0.b": 3})
    with pytest.raises(ConfigError, match="no nested component '7'"):
        p.set_params(**{"stages.7.k": 3})


def test_set_params_names_the_parameter_once_and_explains_a_type_change():
    p = BM25() >> Cutoff(k=5)
    # a cross-field check after a set named the path twice ("stages.0.stemmer.stemmer: unknown stemmer")
    with pytest.raises(ConfigError) as err:
        p.set_params(**{"stages.0.stemmer": "englsh"})
    assert err.value.path == "stages.0.stemmer" and str(err.value).startswith("stages.0.stemmer: unknown stemmer")
    with pytest.raises(ConfigError) as err:
        BM25().set_params(stemmer="englsh")
    assert err.value.path == "stemmer"
    # a type is not a parameter ("has no parameter 'type'"): say how another component is put there
    with pytest.raises(ConfigError, match=r"^stages\.1\.type: a component's type is not a parameter: edit the "):
        p.set_params(**{"stages.1.type": "bm25"})
    from ragopt.retrievers.dense import DenseRetriever

    dense = DenseRetriever()
    with pytest.raises(ConfigError, match=r"^encoder\.type: .*: replace the component \(encoder=\{type: \.\.\., "):
        dense.set_params(**{"encoder.type": "bm25"})
    dense.set_params(encoder={"type": "sentence_transformer", "model": "org/other"})  # as the message says
    assert dense.encoder.model == "org/other"


def test_a_refused_set_params_leaves_the_component_as_it_was():
    p = (BM25() >> Cutoff(k=5)).fit(Corpus(["d1", "d2"], ["apple banana", "cherry dates"]))
    before = p.to_config()
    # the value used to stay when the cross-field check refused it: a pipeline with no stages
    with pytest.raises(ConfigError, match="a pipeline needs at least one stage"):
        p.set_params(stages=[])
    # and a refused second parameter left the first one set
    with pytest.raises(ConfigError, match=r"^stages\.1\.k: must be >= 1"):
        p.set_params(**{"stages.0.k1": 1.5, "stages.1.k": 0})
    with pytest.raises(ConfigError, match=r"^stages\.0\.stemmer: unknown stemmer"):
        p.set_params(**{"stages.1.k": 3, "stages.0.stemmer": "englsh"})
    assert p.to_config() == before and p.is_fitted  # nothing changed, so nothing was unfitted
    p.set_params(**{"stages.0.k1": 1.5, "stages.1.k": 3})
    assert (p.stages[0].k1, p.stages[1].k) == (1.5, 3) and not p.is_fitted


def test_clone_is_fresh_and_independent():
    a = Cutoff(k=3).fit(TINY)
    b = a.clone(k=5)
    assert b.k == 5 and a.k == 3
    assert a.is_fitted and not b.is_fitted


def test_set_params_clears_fitted_state():
    a = Cutoff(k=3).fit(TINY)
    a.set_params(k=10)
    assert not a.is_fitted
    # a nested parameter unfits that stage (and so its pipeline), not its siblings
    p = Pipeline(stages=[Cutoff(k=3), Cutoff(k=2)]).fit(TINY)
    assert p.is_fitted and p.corpus is TINY
    p.set_params(**{"stages.0.k": 1})
    assert not p.is_fitted and not p.stages[0].is_fitted and p.stages[1].is_fitted


def test_equality_config_and_hash_are_blind_to_fitted_state():
    fitted, fresh = Cutoff(k=3).fit(TINY), Cutoff(k=3)
    assert fitted == fresh and fitted.to_config() == fresh.to_config()
    assert fitted.config_hash() == fresh.config_hash() and repr(fitted) == repr(fresh)


def test_choices_validation_and_cross_field_validate():
    with pytest.raises(ConfigError, match="must be one of"):
        Scaler(mode="div")
    with pytest.raises(ConfigError, match=r"stemmer: pyserini supports stemmers \[.porter., .krovetz.\] or null"):
        BM25(backend="pyserini", stemmer="german")
    with pytest.raises(ConfigError, match="unknown stemmer 'englsh'; did you mean 'english'"):
        BM25(stemmer="englsh")


def test_required_parameter_missing():
    @register("test_needs_x")
    class NeedsX(Component):
        x: int

    with pytest.raises(ConfigError, match="missing required key.*x"):
        from_config({"type": "test_needs_x"})
    assert from_config({"type": "test_needs_x", "x": 3}).x == 3


def test_register_twice_with_other_class_fails():
    with pytest.raises(ValueError, match="already registered"):

        @register("bm25")
        class Other(Stage):
            pass


def test_a_library_error_is_quoted_in_one_line():
    from ragopt.errors import first_line

    # the idiom it replaces (str(e).splitlines()[0]) gave "" for a message that starts with a newline
    assert (
        first_line(OSError("\n  We couldn't connect.\nCheck your internet connection."))
        == "OSError: We couldn't connect."
    )
    assert first_line(ValueError()) == "ValueError" and first_line(RuntimeError("  \n ")) == "RuntimeError"
    assert first_line(RuntimeError("x" * 500)) == "RuntimeError: " + "x" * 300


def test_a_key_that_cannot_be_printed_is_named_quoted_on_one_line():
    # found by `make fuzz` (a study's parameter path naming a key '\n'): the location was printed raw, over two lines
    with pytest.raises(ConfigError) as ei:
        from_config({"type": "pipeline", "stages": [{"type": "bm25", "k1\nx": 1.0}]})
    assert ei.value.path == "stages[0].k1\nx"  # the location itself is kept as given
    assert str(ei.value).startswith("'stages[0].k1\\nx': unknown key for component 'bm25'")
    assert "\n" not in str(ei.value)
    plain = ConfigError("stages[0].k1", "bad")  # a printable location is shown as it is
    assert str(plain) == "stages[0].k1: bad"


def test_integers_beyond_64_bits_and_non_finite_floats_are_refused():
    with pytest.raises(ConfigError, match=r"^top_k: expected a 64-bit integer, got 9223372036854775808$"):
        BM25(top_k=2**63)
    with pytest.raises(ConfigError, match=r"^top_k: expected a 64-bit integer, got <about 5001 digits>$"):
        BM25(top_k=10**5000)  # its repr alone raises ValueError (Python's 4,300-digit limit)
    with pytest.raises(ConfigError, match=r"^k1: expected a finite number, got nan$"):
        BM25(k1=float("nan"))
    assert BM25(top_k=2**63 - 1).top_k == 2**63 - 1 and BM25(top_k=7.0).top_k == 7  # an integral float is an int
