"""Query rewriters: stages that change the query texts before retrieval (:mod:`.llm_rewrite`, an LLM turning a task
into the capability or keywords it needs)."""

from ragopt.rewriters.llm_rewrite import TEMPLATES, QueryRewriter, clean_rewrite

__all__ = ["QueryRewriter", "TEMPLATES", "clean_rewrite"]
