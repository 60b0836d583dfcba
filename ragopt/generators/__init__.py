"""Generators: stages that turn queries and their top candidates into answers with an LLM
(:mod:`.generate`), and the prompt building they share (:mod:`.prompting`)."""

from ragopt.generators.generate import Generator, default_llm
from ragopt.generators.prompting import TEMPLATES, extract_answer, order_passages, pack_context

__all__ = ["Generator", "default_llm", "TEMPLATES", "extract_answer", "order_passages", "pack_context"]
