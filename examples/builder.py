"""Build a BM25 pipeline in Python, evaluate it on scifact, compare two settings with a paired test.

Run from the repository root: .venv/bin/python examples/builder.py
"""

from ragopt import BM25, evaluate_pipeline, load_dataset
from ragopt.evaluation import paired_test

ds = load_dataset("scifact")
base = evaluate_pipeline(BM25(k1=0.9, b=0.4), ds, metrics=["ndcg@10", "recall@100"], progress=False)
tuned = evaluate_pipeline(BM25(k1=1.5, b=0.75), ds, metrics=["ndcg@10", "recall@100"], progress=False)
print("k1=0.9 b=0.4 :", base.metrics)
print("k1=1.5 b=0.75:", tuned.metrics)
print(paired_test(base.per_query["ndcg@10"], tuned.per_query["ndcg@10"], test="randomization").to_dict())

pipe = BM25() % 3
pipe.fit(ds.corpus)
for doc_id, score in pipe.search("microRNA and cancer").ranked(0):
    print(f"{score:7.3f}  {doc_id}  {ds.corpus.titles[ds.corpus.index_of(doc_id)][:70]}")
