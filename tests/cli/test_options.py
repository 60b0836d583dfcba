"""The `ragopt` parser and output contract: every option explained, shared options declared once, --help without
numpy, --json purity (one JSON object on stdout, everything else on stderr)."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path

import numpy as np
import pytest

import ragopt.cli as cli
from ragopt.cli import _options as opts
from ragopt.cli._output import Output, artifact_lines, write


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    """Every (sub-)command's parser by its full name ("eval", "train cross-encoder"), leaves only."""
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        return {"": parser}
    return {
        f"{name} {sub}".strip(): p for name, child in subs[0].choices.items() for sub, p in _subparsers(child).items()
    }


COMMANDS = sorted(_subparsers(cli.build_parser()))


def test_every_command_is_listed_once():
    assert COMMANDS == [
        "compare",
        "components",
        "datasets",
        "eval",
        "index",
        "pipelines",
        "report",
        "search",
        "serve-mcp",
        "train bi-encoder",
        "train blockrank",
        "train cross-encoder",
        "tune",
    ]
    assert all(callable(m.register) for m in cli.COMMANDS)


@pytest.mark.parametrize("cmd", COMMANDS)
def test_help_explains_every_option(cmd, capfd):
    with pytest.raises(SystemExit) as e:
        cli.main([*cmd.split(), "--help"])
    assert e.value.code == 0
    text = capfd.readouterr().out
    for action in _subparsers(cli.build_parser())[cmd]._actions:
        if action.dest != "help":
            assert action.help, f"{cmd} {action.option_strings or action.dest} has no help"
            assert (action.option_strings[-1] if action.option_strings else action.metavar or action.dest) in text


@pytest.mark.parametrize(
    "option",
    ["--json", "--index-dir", "--no-progress", "--set", "--storage", "--split", "--rebuild", "--dataset", "--pipeline"],
)
def test_shared_options_are_declared_once(option):
    """Where commands share an option it has one spelling and one type; --json, --index-dir, --set, --storage
    and --no-progress also one help text."""
    found = {
        cmd: a for cmd, p in _subparsers(cli.build_parser()).items() for a in p._actions if option in a.option_strings
    }
    assert len(found) >= 2, found
    assert len({tuple(a.option_strings) for a in found.values()}) == 1
    assert len({(type(a).__name__, a.type, a.metavar) for a in found.values()}) == 1
    if option in ("--json", "--index-dir", "--set", "--storage", "--no-progress"):
        assert len({a.help for a in found.values()}) == 1


def test_fitting_commands_share_one_option_set():
    names = {cmd: [a.dest for a in _subparsers(cli.build_parser())[cmd]._actions] for cmd in ("index", "eval")}
    common = ["help", "dataset", "pipeline", "set", "index_dir", "rebuild", "no_progress", "json"]
    assert names["index"] == [*common, "ray", "ray_workers", "ray_cpus_per_worker"]
    assert names["eval"][:9] == [*common[:4], "split", *common[4:]]


def test_help_loads_no_numpy_and_console_script_is_main():
    code = (
        "import sys, contextlib, io\n"
        "from ragopt.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    for cmd in ([], ['eval'], ['tune'], ['train', 'cross-encoder'], ['serve-mcp']):\n"
        "        try:\n"
        "            main([*cmd, '--help'])\n"
        "        except SystemExit:\n"
        "            pass\n"
        "print(sorted(m for m in ('numpy', 'yaml', 'optuna', 'torch', 'mcp') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
    (ep,) = [ep for ep in entry_points(group="console_scripts") if ep.name == "ragopt"]
    assert ep.value == "ragopt.cli:main" and ep.load() is cli.main


def test_tune_help_lists_the_tuner_registry(capfd):
    from ragopt.tuning.tuners.registry import tuner_names

    with pytest.raises(SystemExit):
        cli.main(["tune", "--help"])
    table = capfd.readouterr().out.split("tuners (--tuner, or the config's `tuner`):\n")[1]
    assert [line.split()[0] for line in table.splitlines()] == tuner_names()


def test_python_m_ragopt_cli():
    res = subprocess.run([sys.executable, "-m", "ragopt.cli", "--version"], capture_output=True, text=True)
    assert res.returncode == 0 and res.stdout.startswith("ragopt ")
    res = subprocess.run([sys.executable, "-m", "ragopt.cli"], capture_output=True, text=True)
    assert res.returncode == 2 and "the following arguments are required: COMMAND" in res.stderr


def test_output_json_and_text():
    out = Output("a line\n", {"n": np.int64(3), "x": np.float32(0.5), "path": Path("/tmp/x")})
    buf = _Buffer()
    write(buf, out, as_json=True)
    write(buf, out, as_json=False)
    first, second = buf.text.splitlines()
    assert json.loads(first) == {"n": 3, "x": 0.5, "path": "/tmp/x"} and second == "a line"
    with pytest.raises(TypeError, match="not JSON serialisable: object"):
        write(_Buffer(), Output("", {"o": object()}), as_json=True)
    with pytest.raises(TypeError, match="must return an Output with obj"):
        write(_Buffer(), Output("text only"), as_json=True)
    assert artifact_lines(
        [
            {"created": True, "kind": "bm25-bm25s", "path": "/s/a"},
            {"created": False, "kind": "passages", "path": "/s/b"},
        ]
    ) == ["  built  bm25-bm25s: /s/a", "  reused passages: /s/b"]


def test_stdout_reserved_for_json_sends_everything_else_to_stderr():
    code = (
        "import os\n"
        "from ragopt.cli._output import stdout_reserved_for_json\n"
        "with stdout_reserved_for_json(True) as out:\n"
        "    os.write(1, b'fd noise\\n')\n"  # what Java or a C library writes
        "    print('print noise')\n"  # block-buffered on a pipe: still in the buffer at the end of the block
        "    out.write('{\"ok\": true}\\n')\n"
        "print('after')\n"
        "with stdout_reserved_for_json(False) as out:\n"
        "    out.write('text\\n')\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert res.stdout == '{"ok": true}\nafter\ntext\n'
    assert res.stderr == "fd noise\nprint noise\n"


def test_option_values():
    parser = argparse.ArgumentParser()
    opts.add_pipeline_run(parser)
    args = parser.parse_args(
        [
            "-d",
            "x",
            "--set",
            "stages.0.k1=1.5",
            "--set",
            "stages.0.stemmer=null",
            "--no-progress",
            "--index-dir",
            "/tmp/somewhere",
        ]
    )
    pipe = opts.load_pipeline(args)
    assert pipe.stages[0].k1 == 1.5 and pipe.stages[0].stemmer is None
    assert opts.progress(args) is False and opts.progress(parser.parse_args(["-d", "x"])) is None
    assert str(opts.store(args).root) == "/tmp/somewhere"


def test_an_llm_backend_given_inline(tmp_path):
    from ragopt.errors import ConfigError

    # an inline mapping was taken for a file name ("model path '{type: openai, ...}' does not exist")
    backend = opts.llm_backend("{type: openai, model: m, base_url: 'http://127.0.0.1:9/v1', api_key_env: ''}", "--llm")
    assert (backend.type_name, backend.model, backend.base_url) == ("openai", "m", "http://127.0.0.1:9/v1")
    with pytest.raises(ConfigError, match=r"^--llm\.base_url: expected an http\(s\) URL, got 'ftp://x'$"):
        opts.llm_backend("{type: openai, model: m, base_url: ftp://x}", "--llm")
    with pytest.raises(ConfigError, match=r"^--judge:1:\d+: invalid YAML"):
        opts.llm_backend("{type: openai", "--judge")
    # a file and a model name work as before
    (tmp_path / "b.yaml").write_text("type: openai\nmodel: f\nbase_url: http://127.0.0.1:9/v1\n")
    assert opts.llm_backend(str(tmp_path / "b.yaml"), "--llm").model == "f"
    assert opts.llm_backend("smollm2-135m-instruct", "--llm").type_name == "transformers"


class _Buffer:
    def __init__(self):
        self.text = ""

    def write(self, s: str) -> None:
        self.text += s
