"""rank_llm's listwise RankGPT reranker beside ragopt's PRP: the same model, the same queries, the same candidates.

``rank_llm``'s pairwise reranker is DuoT5 (T5 weights, not available offline here); its listwise RankGPT
(``SafeOpenai``) talks to any OpenAI-compatible endpoint. This script serves the packaged LLM (llama.cpp, through
ragopt's call cache) on a local endpoint (``benchmarks/rag.py serve``), points RankGPT at it, and reranks BM25's top
``--depth`` for the queries ``prp.py quality`` uses (same dataset, ``--heldout-of``, ``--queries``, ``--seed``):
nDCG@10, P@1, seconds and LLM calls per query. The PRP rows to compare with are in ``results/prp.json``.

rank_llm is not a ragopt dependency: install it beside the virtualenv without its dependencies (it requires vLLM,
which RankGPT does not use) and put it on ``PYTHONPATH``::

    pip install --no-deps --target /tmp/rank_llm_pkgs rank-llm==0.25.7 dacite ftfy wcwidth
    python benchmarks/rag.py serve --model qwen2.5-coder-1.5b-instruct --threads 1 --max-tokens 96 \\
        --url-file /tmp/rank-llm.url &
    PYTHONPATH=/tmp/rank_llm_pkgs python benchmarks/prp_rank_llm.py --url-file /tmp/rank-llm.url \\
        --heldout-of ARTIFACT --queries 10 --seed 1

Three things are bridged, none of them in rank_llm's ranking logic: module stubs for ``vllm`` (imported by a sibling
module at package import, never called by RankGPT) and package modules for ``rank_llm.rerank`` and
``rank_llm.rerank.listwise`` whose ``__init__`` is not run (they import a T5 module that this transformers version
cannot load); tiktoken's encodings, which it downloads, replaced by the served model's own tokenizer (llama.cpp,
vocabulary only), so the token counts are the model's; and RankGPT's 30-second HTTP timeout, raised to 900 s (a CPU
prompt of ten passages takes longer; on a timeout rank_llm retries forever).
"""

from __future__ import annotations

import argparse
import sys
import time
import types
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks._common import load, machine_info, merge_result

RESULTS = ROOT / "benchmarks" / "results" / "prp.json"


def _bridge(model: str, store: Any) -> Any:
    """Import rank_llm's RankGPT with the stubs described in the module docstring; returns the module."""
    import importlib.util

    class _Stub(types.ModuleType):
        def __getattr__(self, name: str) -> Any:
            if name.startswith("__"):
                raise AttributeError(name)
            return type(name, (), {})

    for name in ("vllm", "vllm.lora", "vllm.lora.request", "vllm.sampling_params", "vllm.outputs"):
        sys.modules.setdefault(name, _Stub(name))
    import rank_llm

    for sub in ("rerank", "rerank/listwise"):  # package modules whose __init__ is not run (see the docstring)
        name = "rank_llm." + sub.replace("/", ".")
        pkg = types.ModuleType(name)
        pkg.__path__ = [str(Path(rank_llm.__file__).parent / sub)]
        sys.modules[name] = pkg
    spec = importlib.util.find_spec("rank_llm.rerank.listwise.rank_gpt")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)

    from llama_cpp import Llama

    from ragopt.llm.models import resolve_llm

    resolved = resolve_llm(model, store=store)
    vocab = Llama(str(Path(resolved.source) / (resolved.gguf_file or "")), vocab_only=True, verbose=False)

    class _Encoding:
        def encode(self, text: str, **_: Any) -> list[int]:
            return vocab.tokenize(text.encode("utf-8"), add_bos=False, special=False)

    mod.tiktoken = types.SimpleNamespace(get_encoding=lambda name: _Encoding())
    import openai

    create = openai.chat.completions.create

    def create_long(*args: Any, timeout: float | None = None, **kwargs: Any) -> Any:
        return create(*args, timeout=900, **kwargs)

    mod.openai = types.SimpleNamespace(
        chat=types.SimpleNamespace(completions=types.SimpleNamespace(create=create_long))
    )
    mod._openai_module = openai
    return mod


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--url-file", required=True, help="where `rag.py serve` wrote its base URL")
    ap.add_argument("--model", default="qwen2.5-coder-1.5b-instruct")
    ap.add_argument("--dataset", default="nq-open-oracle-dev")
    ap.add_argument("--heldout-of", default=None, metavar="ARTIFACT")
    ap.add_argument("--queries", type=int, default=10)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--depth", type=int, default=10, help="BM25 candidates reranked (one window when <= --window)")
    ap.add_argument("--window", type=int, default=10)
    ap.add_argument("--stride", type=int, default=5)
    ap.add_argument("--passage-words", type=int, default=100, help="rank_llm truncates each passage to this")
    ap.add_argument("--store", type=Path, default=None)
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args(argv)

    import os

    from benchmarks import prp
    from ragopt.evaluation import evaluate
    from ragopt.types import Batch

    if args.store is None:
        args.store = Path(os.environ.get("RAGOPT_INDEX_DIR", ROOT / "indexes"))
    setup_args = argparse.Namespace(
        dataset=args.dataset, store=args.store, heldout_of=args.heldout_of, queries=args.queries, seed=args.seed
    )
    setup_args.threads, setup_args.backend = 0, "llama_cpp"
    ds, store, queries, base, _ = prp._setup(setup_args, with_llm=False)
    qrels_all = ds.qrels("test")
    qrels = {q: qrels_all[q] for q in queries.ids}
    gpt = _bridge(args.model, store)
    from rank_llm.data import Candidate, Query, Request
    from rank_llm.rerank.rankllm import PromptMode

    url = Path(args.url_file).read_text().strip().rstrip("/") + "/"
    ranker = gpt.SafeOpenai(
        model=args.model,
        context_size=4096,
        prompt_mode=PromptMode.RANK_GPT,
        window_size=args.window,
        stride=args.stride,
        keys="not-needed",
        base_url=url,
    )
    gpt._openai_module.base_url = url  # the real client (RankGPT's __init__ set these on the bridge's namespace)
    gpt._openai_module.api_key = "not-needed"

    def metrics(batch: Batch) -> dict[str, float]:
        return {k: round(v, 4) for k, v in evaluate(batch.to_run(), qrels, ["ndcg@10", "P@1"]).metrics.items()}

    depth = min(args.depth, base.doc_idx.shape[1])
    new_idx = base.doc_idx.copy()
    new_scores = base.scores.copy()
    per_query, t_all = [], time.perf_counter()
    for i, qtext in enumerate(base.queries.texts):
        cands = []
        for r in range(depth):
            d = int(base.doc_idx[i, r])
            words = ds.corpus.text(d, True).split()[: args.passage_words]  # title + text, as PRP's with_title
            cands.append(Candidate(docid=str(d), score=float(base.scores[i, r]), doc={"text": " ".join(words)}))
        req = Request(query=Query(text=qtext, qid=str(queries.ids[i])), candidates=cands)
        t0 = time.perf_counter()
        res = ranker.rerank_batch([req], rank_start=0, rank_end=depth, populate_invocations_history=True)[0]
        secs = time.perf_counter() - t0
        order = [int(c.docid) for c in res.candidates]
        assert sorted(order) == sorted(int(x) for x in base.doc_idx[i, :depth])
        new_idx[i, :depth] = order
        new_scores[i, :depth] = [float(depth - r) + 1e3 for r in range(depth)]
        calls = res.invocations_history or []
        per_query.append(
            {
                "qid": str(queries.ids[i]),
                "seconds": round(secs, 2),
                "llm_calls": len(calls),
                "prompt_tokens": sum(int(c.input_token_count) for c in calls),
                "output_tokens": sum(int(c.output_token_count) for c in calls),
                "changed_top1": order[0] != int(base.doc_idx[i, 0]),
                "identity_order": order == [int(x) for x in base.doc_idx[i, :depth]],
                "responses": [str(c.response) for c in calls],
            }
        )
        print(f"query {i + 1}/{len(queries)}: {per_query[-1]}", file=sys.stderr, flush=True)
    out = Batch(base.queries, base.corpus, new_idx, new_scores)
    nq = len(queries)
    row = {
        "metrics": metrics(out),
        "llm_calls_per_query": sum(p["llm_calls"] for p in per_query) / nq,
        "prompt_tokens_per_query": sum(p["prompt_tokens"] for p in per_query) / nq,
        "output_tokens_per_query": sum(p["output_tokens"] for p in per_query) / nq,
        "seconds_per_query": round((time.perf_counter() - t_all) / nq, 2),
        "changed_top1": sum(p["changed_top1"] for p in per_query),
        "kept_bm25_order": sum(p["identity_order"] for p in per_query),
        "per_query": per_query,
    }
    res = {
        "machine": machine_info(["rank-llm", "openai", "llama-cpp-python"]),
        "load_before_after": load(),
        "dataset": ds.name,
        "n_queries": nq,
        "seed": args.seed,
        "queries_from": f"held-out queries of {args.heldout_of}" if args.heldout_of else "all judged queries",
        "settings": {
            "reranker": "rank_llm SafeOpenai (RankGPT listwise), PromptMode.RANK_GPT",
            "depth": depth,
            "window": args.window,
            "stride": args.stride,
            "passage_words": args.passage_words,
            "served": f"{args.model} via benchmarks/rag.py serve (llama.cpp, ragopt call cache)",
        },
        "rows": {"bm25": {"metrics": metrics(base)}, "rank_llm-rankgpt": row},
    }
    print({k: v for k, v in row.items() if k != "per_query"}, file=sys.stderr)
    merge_result(args.out, "rank_llm", res, key=f"{args.model}@llama_cpp n={nq} depth={depth} {ds.name}")


if __name__ == "__main__":
    main()
