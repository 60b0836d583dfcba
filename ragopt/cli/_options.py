"""Options that several commands share, each declared once here, and the objects they turn into.

``ragopt --help`` imports this module, so it imports nothing but argparse at the top: the functions that turn
parsed options into objects (:func:`load_pipeline`, :func:`store`) import ragopt's core when a command runs."""

from __future__ import annotations

import argparse

EPILOG_DATASET = (
    "DATASET is a folder in the BEIR layout (corpus.jsonl, queries.jsonl, qrels/<split>.tsv) or a "
    "name looked up in $RAGOPT_DATA_PATH, ../shared/data and the user cache "
    "(`ragopt datasets` lists them)."
)
EPILOG_PIPELINE = "PIPELINE is a name (`ragopt pipelines` lists them, e.g. bm25) or a path to a pipeline YAML."


def add_json(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout and nothing else")


def add_progress(p: argparse.ArgumentParser) -> None:
    p.add_argument("--no-progress", action="store_true", help="no progress bars (they go to stderr, on a terminal)")


def add_index_dir(p: argparse.ArgumentParser) -> None:
    p.add_argument("--index-dir", metavar="DIR", help="artifact store root (default: $RAGOPT_INDEX_DIR or ./indexes)")


def add_storage(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--storage",
        metavar="URL",
        help="Optuna storage URL (default: sqlite file studies.db in the artifact store); e.g. "
        "postgresql://user:pass@host/db to share a study between workers",
    )


def add_dataset(
    p: argparse.ArgumentParser, help: str = "dataset folder (BEIR layout) or name, e.g. scifact", required: bool = True
) -> None:
    p.add_argument("--dataset", "-d", required=required, metavar="DATASET", help=help)


def add_split(p: argparse.ArgumentParser, help: str = "qrels split: qrels/<split>.tsv (default: test)") -> None:
    p.add_argument("--split", default="test", help=help)


def add_pipeline(
    p: argparse.ArgumentParser, default: str | None = "bm25", help: str = "pipeline name or YAML path (default: bm25)"
) -> None:
    p.add_argument("--pipeline", "-p", default=default, metavar="PIPELINE", help=help)
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="PATH=VALUE",
        help="override a pipeline parameter by dotted path, e.g. --set stages.0.k1=1.2 "
        "(VALUE is parsed as YAML); repeatable",
    )


def add_rebuild(
    p: argparse.ArgumentParser,
    help: str = "rebuild the pipeline's indexes even if a matching one exists (replaces it atomically)",
) -> None:
    p.add_argument("--rebuild", action="store_true", help=help)


def add_pipeline_run(p: argparse.ArgumentParser, split: bool = True) -> None:
    """The options of a command that fits a pipeline on a dataset (index, search, eval)."""
    add_dataset(p)
    add_pipeline(p)
    if split:
        add_split(p)
    add_index_dir(p)
    add_rebuild(p)
    add_progress(p)
    add_json(p)


# -- parsed options -> objects --------------------------------------------------------------------


def load_pipeline(args: argparse.Namespace):
    """The pipeline ``--pipeline`` names, with each ``--set PATH=VALUE`` applied."""
    from ragopt.errors import ConfigError
    from ragopt.pipeline_io import load_pipeline as load
    from ragopt.pipeline_io import parse_yaml

    pipe = load(args.pipeline)
    for item in args.set:
        key, sep, raw = item.partition("=")
        if not sep:
            raise ConfigError("--set", f"expected PATH=VALUE, got {item!r}")
        pipe.set_params(**{key.strip(): parse_yaml(raw, f"--set {key.strip()}")})
    return pipe


def store(args: argparse.Namespace):
    """The artifact store of ``--index-dir`` (default: $RAGOPT_INDEX_DIR or ./indexes)."""
    from ragopt.store import ArtifactStore

    return ArtifactStore(args.index_dir) if args.index_dir else ArtifactStore()


def progress(args: argparse.Namespace) -> bool | None:
    """``False`` with ``--no-progress``; otherwise ``None`` (progress bars on a terminal, see ragopt._progress)."""
    return False if getattr(args, "no_progress", False) else None


def llm_backend(spec: str, option: str):
    """An LLM backend from a CLI value: an inline YAML mapping (``{type: openai, model: ...}``), a YAML/JSON file
    holding a backend config, or a model name (packaged alias or hub id) on the transformers backend."""
    from pathlib import Path

    from ragopt.errors import ConfigError
    from ragopt.llm import load_backend

    if spec.lstrip().startswith("{"):  # was read as a file name: "model path '{type: openai, ...}' does not exist"
        from ragopt.pipeline_io import parse_yaml

        cfg = parse_yaml(spec, option)
        if not isinstance(cfg, dict):
            raise ConfigError(option, f"expected a backend mapping such as {{type: openai, model: NAME}}, got {spec!r}")
        try:
            return load_backend(cfg)
        except ConfigError as e:  # name the option: "--llm.model: ..."
            raise ConfigError(f"{option}.{e.path}" if e.path else option, e.message) from None
    path = Path(spec)
    if path.suffix in (".yaml", ".yml", ".json") or path.is_file():
        from ragopt.pipeline_io import read_yaml

        if not path.is_file():
            raise ConfigError(option, f"backend config file {spec!r} does not exist")
        return load_backend(read_yaml(path))
    return load_backend({"type": "transformers", "model": spec})
