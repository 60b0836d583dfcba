"""Rerankers: stages that rescore a retriever's candidates (cross-encoder, CUR search)."""
