"""``ragopt index``: build (or reuse) the indexes a pipeline needs for a dataset."""

from __future__ import annotations

import argparse

from ragopt.cli import _options as opts
from ragopt.cli._output import Output, artifact_lines


def register(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser(
        "index",
        help="build (or reuse) the indexes a pipeline needs for a dataset",
        description="Fit a pipeline on a dataset's corpus: build its indexes in the artifact "
        "store, or reuse matching ones.",
        epilog=f"{opts.EPILOG_DATASET} {opts.EPILOG_PIPELINE}",
    )
    opts.add_pipeline_run(p, split=False)
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> Output:
    from ragopt.evaluation.run import fit_pipeline

    fit = fit_pipeline(
        opts.load_pipeline(args), args.dataset, opts.store(args), progress=opts.progress(args), rebuild=args.rebuild
    )
    lines = [
        f"{fit.dataset}: {fit.n_docs} documents, fingerprint {fit.fingerprint[:12]}",
        *artifact_lines(fit.artifacts),
        f"  {fit.seconds:.2f}s",
    ]
    return Output("\n".join(lines), fit.to_dict())
