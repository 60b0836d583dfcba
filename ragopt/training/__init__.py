"""Training of models ragopt stages load (cross-encoders for the ``cross_encoder`` reranker)."""

from ragopt.training.cross_encoder import compare_reranking, heldout_query_ids, train_cross_encoder

__all__ = ["train_cross_encoder", "compare_reranking", "heldout_query_ids"]
