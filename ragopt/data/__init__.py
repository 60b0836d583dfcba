"""Datasets in the BEIR layout: resolve by name or path, load lazily, download the standard BEIR sets."""

from ragopt.data.datasets import (
    Dataset,
    dataset_search_path,
    list_datasets,
    load_corpus,
    load_dataset,
    load_qrels,
    load_queries,
    resolve_dataset,
)
from ragopt.data.jsonl import read_jsonl, write_jsonl
from ragopt.data.queries import read_queries_file
from ragopt.data.splits import split_queries as split_queries

__all__ = [
    "load_dataset",
    "Dataset",
    "read_jsonl",
    "write_jsonl",
    "resolve_dataset",
    "dataset_search_path",
    "list_datasets",
    "load_corpus",
    "load_queries",
    "load_qrels",
    "read_queries_file",
]
