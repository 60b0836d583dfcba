"""BlockRank prefill cost on a GPU: full attention vs the block-sparse prefills at n = 10 .. 1000 candidates, with a
randomly initialised model of a real size (issue 15: "more on a GPU").

The packaged LLMs cannot go to the GPU machine (a call carries 64 MiB), so the weights are random: time and memory
do not depend on their values, the ranking does, so this measures cost only; the blocked and flex scores are still
compared with the masked prefill's (same model, same prompt). Three steps:

1. Here: ``python benchmarks/blockrank_gpu.py prepare`` writes ``benchmarks/results/blockrank_gpu_bundle.tmp``
   (about 4 MB, git-ignored): the architecture (Mistral-7B-v0.3's shapes, the paper's model family: hidden 4096,
   32 heads, 8 key/value heads, MLP 14336; with the packaged SmolLM2's tokenizer, so a vocabulary of 49,152 instead
   of 32,768, which changes the embedding table and nothing the prefill computes after it), the tokenizer, and
   nq-open-oracle-dev passages and one question as text.
2. There (one call; carry the bundle): ``python3 benchmarks/blockrank_gpu.py run --out $OUT/blockrank_gpu.json``
   builds the model on the GPU in bf16 with random weights, only as deep as the scoring layer (16, the middle of
   Mistral's 32: the stage runs no later layer, so deeper layers would cost load time and nothing else), saves it
   and loads it through ``TransformersLLM`` like any checkpoint; then, for every n, each variant (``full``: causal
   SDPA over the whole prompt; ``masked``: the block-sparse 4D mask, dense work, up to ``--masked-max``;
   ``blocked``; ``flex``) gets a warm-up call on the same prompt (it compiles flex for that length) and
   ``--repeats`` timed calls (median, ``torch.cuda.synchronize`` inside the timer), and the peak GPU memory above
   the loaded model (``max_memory_allocated``). The JSON is rewritten after every measurement, so a call stopped
   at its limit still returns what finished, and no new size starts after ``--budget-s``.
3. Here: ``python benchmarks/blockrank_gpu.py merge --from <files_at>/blockrank_gpu.json`` puts the run under
   ``gpu_cost`` in ``benchmarks/results/blockrank.json``; ``python benchmarks/blockrank.py tables`` prints it.

Checked on the CPU with ``run --device cpu --dtype float32 --arch tiny`` (a 4-layer model of the same layout).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

BUNDLE = ROOT / "benchmarks" / "results" / "blockrank_gpu_bundle.tmp"
RESULTS = ROOT / "benchmarks" / "results" / "blockrank.json"
DATA = ROOT.parent / "shared" / "data"

from benchmarks.blockrank import VARIANTS, _max_diff

# Mistral-7B-v0.3's shapes (config.json of mistralai/Mistral-7B-Instruct-v0.3); "tiny" checks the script on a CPU
ARCHS: dict[str, dict[str, Any]] = {
    "mistral-7b": {
        "hidden_size": 4096,
        "intermediate_size": 14336,
        "num_attention_heads": 32,
        "num_key_value_heads": 8,
        "head_dim": 128,
        "num_hidden_layers": 32,
        "rms_norm_eps": 1e-5,
        "rope_theta": 1e6,
    },
    "tiny": {
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "head_dim": 16,
        "num_hidden_layers": 8,
        "rms_norm_eps": 1e-5,
        "rope_theta": 1e6,
    },
}


def prepare(args: argparse.Namespace) -> None:
    from ragopt.data import load_dataset
    from ragopt.llm.transformers_backend import TransformersLLM
    from ragopt.store import ArtifactStore

    out = Path(args.out)
    if out.exists():
        shutil.rmtree(out)
    (out / "tokenizer").mkdir(parents=True)
    _, tok = TransformersLLM(model=args.tokenizer_from, device="cpu").use_store(ArtifactStore(args.store)).load()
    tok.save_pretrained(out / "tokenizer")
    ds = load_dataset(str(DATA / args.dataset))
    texts = [ds.corpus.text(i, True) for i in range(min(args.passages, len(ds.corpus)))]
    question = ds.queries_for("test").texts[0]
    (out / "texts.json").write_text(json.dumps({"dataset": args.dataset, "question": question, "passages": texts}))
    (out / "archs.json").write_text(json.dumps({"vocab_size": len(tok), **{k: v for k, v in ARCHS.items()}}))
    size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    print(f"bundle {out}: {size / 2**20:.1f} MiB, {len(texts)} passages")


def _build_model(bundle: Path, arch: str, layer: int, dtype: str, device: str, folder: Path) -> None:
    """A randomly initialised MistralForCausalLM of ``arch``'s shapes, ``layer + 1`` layers deep, saved to ``folder``
    with the bundle's tokenizer (built on the device: a 7B-shaped model initialised on the CPU takes minutes)."""
    import torch
    from transformers import AutoTokenizer, MistralConfig, MistralForCausalLM

    spec = json.loads((bundle / "archs.json").read_text())
    shapes = dict(spec[arch])
    tok = AutoTokenizer.from_pretrained(bundle / "tokenizer")
    cfg = MistralConfig(
        **{**shapes, "num_hidden_layers": layer + 1},
        vocab_size=spec["vocab_size"],
        max_position_embeddings=262144,  # full attention numbers every token: n = 1000 x 128 tokens must fit
        sliding_window=None,
        tie_word_embeddings=False,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    torch.manual_seed(0)
    with torch.device(device):
        model = MistralForCausalLM(cfg).to(getattr(torch, dtype))
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    del model
    if device.startswith("cuda"):
        torch.cuda.empty_cache()


def run(args: argparse.Namespace) -> None:
    import numpy as np
    import torch

    from benchmarks._common import machine_info
    from ragopt.llm.transformers_backend import TransformersLLM
    from ragopt.rerankers.blockrank import BlockRankReranker
    from ragopt.store import ArtifactStore
    from ragopt.types import Corpus

    t_start = time.perf_counter()
    bundle = Path(args.bundle)
    text = json.loads((bundle / "texts.json").read_text())
    work = Path(args.work)
    folder = work / "model"
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    cuda = args.device.startswith("cuda")
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    t0 = time.perf_counter()
    _build_model(bundle, args.arch, args.layer, args.dtype, args.device, folder)
    res: dict[str, Any] = {
        "machine": machine_info(["torch", "transformers", "triton"]),
        "device_name": torch.cuda.get_device_name() if cuda else "cpu",
        "arch": args.arch,
        "shapes": json.loads((bundle / "archs.json").read_text())[args.arch],
        "layers_built": args.layer + 1,
        "layer": args.layer,
        "dtype": args.dtype,
        "doc_tokens": args.doc_tokens,
        "repeats": args.repeats,
        "dataset": text["dataset"],
        "weights": "random (seed 0): cost only, no quality",
        "build_seconds": round(time.perf_counter() - t0, 1),
        "rows": [],
        "stopped": None,
    }
    out = Path(args.out)

    def save() -> None:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_suffix(".part")
        tmp.write_text(json.dumps(res, indent=1))
        tmp.replace(out)

    store = ArtifactStore(work / "store")
    llm = TransformersLLM(model=str(folder), device=args.device, dtype=args.dtype).use_store(store)
    model, tok = llm.load()
    base_mem = torch.cuda.memory_allocated() if cuda else 0
    res["model_gb"] = round(base_mem / 2**30, 2)
    passages = text["passages"]
    corpus = Corpus(ids=[f"p{i}" for i in range(len(passages))], texts=passages)
    stages = {
        v: BlockRankReranker(
            llm=llm, sparse=sp, prefill=pf, layer=args.layer, max_doc_tokens=args.doc_tokens, kv_cache_mb=0
        ).fit(corpus, store)
        for v, (sp, pf) in VARIANTS.items()
        if v in args.variants
    }
    warm = stages[args.variants[0]]
    warm.attend(warm.build_prompt(tok, "warm up", warm.doc_token_ids(tok, passages[:2])), [args.layer])
    save()
    for n in args.sizes:
        if time.perf_counter() - t_start > args.budget_s:
            res["stopped"] = f"budget of {args.budget_s} s spent before n = {n}"
            break
        if n > len(passages):
            res["stopped"] = f"the bundle holds {len(passages)} passages, n = {n} asked"
            break
        row: dict[str, Any] = {"n": n}
        res["rows"].append(row)
        scores = {}
        for v, st in stages.items():
            if v == "masked" and n > args.masked_max:
                continue
            prompt = st.build_prompt(tok, text["question"], st.doc_token_ids(tok, passages[:n]))
            row["tokens"] = int(sum(prompt.lengths))
            try:
                t0 = time.perf_counter()
                st.attend(prompt, [args.layer])  # warm-up: compiles flex for this padded length
                sync()
                row[f"{v}_first_call_s"] = round(time.perf_counter() - t0, 3)
                if cuda:
                    torch.cuda.reset_peak_memory_stats()
                times = []
                for _ in range(args.repeats):
                    t0 = time.perf_counter()
                    st.attend(prompt, [args.layer])
                    sync()
                    times.append(time.perf_counter() - t0)
                row[f"{v}_s"] = round(float(np.median(times)), 4)
                if cuda:
                    row[f"{v}_peak_gb"] = round((torch.cuda.max_memory_allocated() - base_mem) / 2**30, 3)
                scores[v] = np.asarray(st.head_scores(prompt, [args.layer])[args.layer].mean(0), dtype=np.float64)
            except Exception as e:  # out of memory at the largest n, say: recorded, the other variants go on
                row[f"{v}_error"] = f"{type(e).__name__}: {str(e).strip().splitlines()[0][:300]}"
                if cuda:
                    torch.cuda.empty_cache()
            print(f"n={n:5d} {v:8s} {row.get(f'{v}_s', row.get(f'{v}_error'))}", file=sys.stderr, flush=True)
            save()
        for v in ("blocked", "flex"):
            if f"{v}_s" in row and "full_s" in row:
                row[f"full_over_{v}"] = round(row["full_s"] / row[f"{v}_s"], 2)
        ref = scores.get("masked")
        for v in ("blocked", "flex"):
            if ref is not None and v in scores:
                row[f"{v}_max_abs_diff_from_masked"] = _max_diff(scores[v], ref)
        save()
    res["total_seconds"] = round(time.perf_counter() - t_start, 1)
    save()
    shutil.rmtree(work, ignore_errors=True)
    print(json.dumps({k: v for k, v in res.items() if k != "machine"}, indent=1))


def merge(args: argparse.Namespace) -> None:
    from benchmarks._common import merge_result

    data = json.loads(Path(getattr(args, "from")).read_text())
    if not data.get("rows"):
        raise SystemExit(f"{getattr(args, 'from')}: no rows measured")
    merge_result(RESULTS, "gpu_cost", data)
    print(f"merged {len(data['rows'])} rows into {RESULTS} (gpu_cost)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("prepare")
    p.add_argument("--out", default=str(BUNDLE))
    p.add_argument("--tokenizer-from", default="smollm2-135m-instruct")
    p.add_argument("--store", default=str(ROOT / "indexes"))
    p.add_argument("--dataset", default="nq-open-oracle-dev")
    p.add_argument("--passages", type=int, default=1000)
    r = sub.add_parser("run")
    r.add_argument("--bundle", default=str(BUNDLE))
    r.add_argument("--out", required=True)
    r.add_argument("--work", default="/tmp/blockrank_gpu", help="the random checkpoint and the store (deleted after)")
    r.add_argument("--arch", choices=sorted(ARCHS), default="mistral-7b")
    r.add_argument("--layer", type=int, default=16)
    r.add_argument("--device", default="cuda")
    r.add_argument("--dtype", choices=["bfloat16", "float16", "float32"], default="bfloat16")
    r.add_argument("--sizes", type=int, nargs="+", default=[10, 20, 50, 100, 200, 500, 1000])
    r.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=["full", "blocked", "flex", "masked"])
    r.add_argument("--masked-max", type=int, default=200, help="largest n for masked (a T x T mask)")
    r.add_argument("--doc-tokens", type=int, default=128)
    r.add_argument("--repeats", type=int, default=3)
    r.add_argument("--budget-s", type=float, default=420, help="start no new n after this many seconds")
    m = sub.add_parser("merge")
    m.add_argument("--from", required=True)
    args = ap.parse_args()
    {"prepare": prepare, "run": run, "merge": merge}[args.cmd](args)


if __name__ == "__main__":
    main()
