"""The tool catalogue: JSONL loading, the indexed text, ids, fingerprints, and parity with the shared tool sets."""

from __future__ import annotations

import json

import pytest

from ragopt.errors import ConfigError, DataError
from ragopt.mcp.catalog import Catalog, TextTemplate, ToolSpec, schema_problem

WEATHER = {
    "name": "get_weather",
    "description": "Weather forecast for a city.",
    "input_schema": {
        "type": "object",
        "properties": {
            "city": {"type": "string", "description": "City name"},
            "unit": {"type": "string", "enum": ["c", "f"]},
        },
        "required": ["city"],
    },
}


def _write(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def test_default_text_is_name_then_description_and_parameters():
    t = ToolSpec("w", **WEATHER)
    tpl = TextTemplate()
    assert tpl.title(t) == "get_weather"
    assert tpl.text(t) == "Weather forecast for a city. Parameters: city: City name; unit:"
    assert TextTemplate(params="names").text(t) == "Weather forecast for a city. Parameters: city; unit"
    assert TextTemplate(params="none").text(t) == "Weather forecast for a city."
    assert TextTemplate(description=False, params="none").text(t) == ""
    assert TextTemplate(name=False).title(t) == ""
    split = TextTemplate(split_name=True)
    assert split.title(ToolSpec("x", "getWeather_forecast-v2")) == "getWeather_forecast-v2 get Weather forecast v2"
    assert split.title(t) == "get_weather get weather"
    assert split.title(ToolSpec("x", "plain")) == "plain"


def test_template_from_dict_rejects_unknown_keys_and_bad_values():
    assert TextTemplate.from_dict({"params": "names"}) == TextTemplate(params="names")
    assert TextTemplate.from_dict(None) == TextTemplate()
    with pytest.raises(ConfigError, match=r"text\.parms: unknown key"):
        TextTemplate.from_dict({"parms": "names"})
    with pytest.raises(ConfigError, match=r"text\.params: must be one of"):
        TextTemplate(params="all")
    with pytest.raises(ConfigError, match=r"text\.name: expected true or false"):
        TextTemplate(name="yes")


def test_from_jsonl_ids_aliases_meta_and_corpus(tmp_path):
    f = _write(
        tmp_path / "mytools.jsonl",
        [
            WEATHER,
            {
                "_id": 7,
                "name": "Add",
                "description": "Add numbers",
                "inputSchema": {"type": "object"},
                "category": "Math",
            },
            {"name": "noop"},
        ],
    )
    cat = Catalog.from_jsonl(f)
    assert cat.name == "mytools" and len(cat) == 3
    assert cat.ids == ["get_weather", "7", "noop"]
    assert cat.get("7").input_schema == {"type": "object"} and cat.get("7").meta == {"category": "Math"}
    assert cat.get("noop").description == "" and cat.get("noop").input_schema is None
    assert "7" in cat and "Add" not in cat and cat.get("missing") is None
    corpus = cat.corpus
    assert corpus.ids == cat.ids and corpus.titles == ["get_weather", "Add", "noop"]
    assert corpus.texts[1] == "Add numbers" and corpus.name == "tools:mytools"


def test_from_jsonl_errors_name_file_and_line(tmp_path):
    with pytest.raises(DataError, match="tools file not found"):
        Catalog.from_jsonl(tmp_path / "absent.jsonl")
    with pytest.raises(DataError, match="a folder without tools.jsonl"):
        Catalog.from_jsonl(tmp_path)
    f = _write(tmp_path / "t.jsonl", [{"name": "a"}, {"name": "a"}])
    with pytest.raises(DataError, match=r"t.jsonl:2: duplicate tool id 'a' \(first on line 1\)"):
        Catalog.from_jsonl(f)
    _write(f, [{"description": "no name"}])
    with pytest.raises(DataError, match=r"t.jsonl:1: tool record needs a non-empty string \"name\""):
        Catalog.from_jsonl(f)
    _write(f, [{"name": "a", "input_schema": "a string"}])
    with pytest.raises(DataError, match=r"t.jsonl:1: input_schema must be a JSON object or null, got str"):
        Catalog.from_jsonl(f)
    _write(f, [{"name": "a", "description": 3}])
    with pytest.raises(DataError, match=r"t.jsonl:1: \"description\" must be a string"):
        Catalog.from_jsonl(f)
    _write(f, [{"name": "a", "_id": None}])  # was taken as the id 'None'
    with pytest.raises(DataError, match=r't.jsonl:1: tool "_id" must be a string or an integer, got null'):
        Catalog.from_jsonl(f)
    _write(f, [{"name": "a", "id": ["x"]}])
    with pytest.raises(DataError, match=r't.jsonl:1: tool "id" must be a string or an integer, got a list'):
        Catalog.from_jsonl(f)
    _write(f, [{"name": "a", "id": 5}, {"name": "b"}])
    assert Catalog.from_jsonl(f).ids == ["5", "b"]  # an integer id is written out, a missing one is the name
    f.write_text("\n")
    with pytest.raises(DataError, match="no tools"):
        Catalog.from_jsonl(f)


def test_invalid_schema_keeps_the_tool_searchable_and_records_why(tmp_path):
    pytest.importorskip("jsonschema")  # without it (it comes with the mcp extra) schemas are taken as given
    bad = {"type": "object", "properties": {"day": {"type": "date (yyyy-mm-dd)"}}}
    assert schema_problem(WEATHER["input_schema"]) is None and schema_problem(None) is None
    assert "invalid input_schema" in schema_problem(bad)
    cat = Catalog.from_jsonl(_write(tmp_path / "t.jsonl", [{"name": "cal", "input_schema": bad}]))
    assert "invalid input_schema" in cat.get("cal").schema_error


def test_duplicate_ids_across_servers_suggest_a_prefix():
    with pytest.raises(DataError, match=r"duplicate tool id 'add' \(servers a and b\); give one server a prefix"):
        Catalog([ToolSpec("add", "add", server="a"), ToolSpec("add", "add", server="b")])
    with pytest.raises(DataError, match="empty id"):
        Catalog([ToolSpec("", "x")])


def test_fingerprint_follows_text_schema_and_owner():
    base = Catalog([ToolSpec("w", **WEATHER)])
    same = Catalog([ToolSpec("w", **WEATHER)])
    assert base.fingerprint == same.fingerprint and base.corpus.fingerprint == same.corpus.fingerprint
    schema = dict(WEATHER["input_schema"], required=["city", "unit"])  # served schema changes, text does not
    other = Catalog([ToolSpec("w", **dict(WEATHER, input_schema=schema))])
    assert other.corpus.fingerprint == base.corpus.fingerprint and other.fingerprint != base.fingerprint
    moved = Catalog([ToolSpec("w", **WEATHER, server="s2")])
    assert moved.fingerprint != base.fingerprint
    assert Catalog([ToolSpec("w", **WEATHER)], TextTemplate(params="none")).fingerprint != base.fingerprint


@pytest.mark.parametrize("name", ["toollens", "metatool-toole"])
def test_shared_tool_sets_index_exactly_as_their_corpus(data_dir, name):
    """The default template reproduces corpus.jsonl, so the service's indexes are the artifacts `ragopt eval`
    builds and the eval figures are the service's figures."""
    from ragopt.data import load_dataset

    ds = load_dataset(data_dir / name)
    cat = Catalog.from_jsonl(ds.path)
    assert len(cat) == len(ds.corpus) == {"toollens": 464, "metatool-toole": 199}[name]
    assert cat.corpus.ids == ds.corpus.ids and cat.corpus.titles == ds.corpus.titles
    assert cat.corpus.texts == ds.corpus.texts
    assert cat.corpus.fingerprint == ds.corpus.fingerprint
    n_bad = sum(1 for t in cat if t.schema_error)
    if name == "toollens":
        pytest.importorskip("jsonschema")
    assert n_bad == {"toollens": 10, "metatool-toole": 0}[name]  # toollens: "type": "enum" / "date (...)"
