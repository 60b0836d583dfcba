"""``ragopt index``: build (or reuse) the indexes a pipeline needs for a dataset, here or with encoding on Ray."""

from __future__ import annotations

import argparse
import contextlib

from ragopt.cli import _options as opts
from ragopt.cli._output import Output, artifact_lines

EPILOG_RAY = (
    "With --ray the corpus is encoded on a Ray cluster (pip install 'ragopt[ray]'): ADDRESS is 'auto' (the cluster "
    "this node belongs to), host:6379, ray://host:10001, or 'local' (a private cluster on this machine). The "
    "embeddings and indexes written are those a single machine writes (same keys, same files), so search, eval, "
    "tune and serve-mcp use them unchanged."
)


def register(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser(
        "index",
        help="build (or reuse) the indexes a pipeline needs for a dataset",
        description="Fit a pipeline on a dataset's corpus: build its indexes in the artifact "
        "store, or reuse matching ones.",
        epilog=f"{opts.EPILOG_DATASET} {opts.EPILOG_PIPELINE} {EPILOG_RAY}",
    )
    opts.add_pipeline_run(p, split=False)
    p.add_argument("--ray", metavar="ADDRESS", help="encode the corpus on this Ray cluster (see below)")
    p.add_argument(
        "--ray-workers", type=int, metavar="N", help="Ray actors encoding shards (default: the cluster's CPUs)"
    )
    p.add_argument(
        "--ray-cpus-per-worker", type=float, default=1.0, metavar="C", help="CPUs each Ray actor reserves (default 1)"
    )
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> Output:
    from ragopt.errors import ConfigError
    from ragopt.evaluation.run import fit_pipeline

    if args.ray is None and (args.ray_workers is not None or args.ray_cpus_per_worker != 1.0):
        raise ConfigError("--ray-workers", "--ray-workers and --ray-cpus-per-worker need --ray ADDRESS")
    pipeline = opts.load_pipeline(args)
    runner = None
    with contextlib.ExitStack() as stack:
        if args.ray is not None:
            from ragopt.distributed import RayShardRunner
            from ragopt.encoders.shards import use_shard_runner

            runner = stack.enter_context(
                RayShardRunner(args.ray, workers=args.ray_workers, cpus_per_worker=args.ray_cpus_per_worker)
            )
            stack.enter_context(use_shard_runner(runner))
        fit = fit_pipeline(pipeline, args.dataset, opts.store(args), progress=opts.progress(args), rebuild=args.rebuild)
    lines = [
        f"{fit.dataset}: {fit.n_docs} documents, fingerprint {fit.fingerprint[:12]}",
        *artifact_lines(fit.artifacts),
    ]
    obj = fit.to_dict()
    if runner is not None:
        r = runner.report
        lines.append(
            f"  ray ({args.ray}): {r['shards']} shards, {r['texts']} texts encoded by {r['workers']} workers on "
            f"{', '.join(r['hosts']) or 'no hosts (nothing to encode)'}"
        )
        obj["ray"] = dict(r)
    lines.append(f"  {fit.seconds:.2f}s")
    return Output("\n".join(lines), obj)
