"""Training of models ragopt stages load: cross-encoders for the ``cross_encoder`` reranker, bi-encoders for the
``dense`` retriever's encoder (:mod:`ragopt.training.bi_encoder`) and causal LMs for the ``blockrank`` reranker
(:mod:`ragopt.training.blockrank`). What the recipes share (the seeded query split, hard-negative mining, the
record beside the model) is in :mod:`ragopt.training.common`."""

from ragopt.training.cross_encoder import compare_reranking, heldout_query_ids, train_cross_encoder

__all__ = ["train_cross_encoder", "compare_reranking", "heldout_query_ids"]
