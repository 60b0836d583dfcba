"""Dense vector indexes behind one interface (:class:`~ragopt.indexes.base.DenseIndex`).

* ``faiss_flat``, ``faiss_hnsw``, ``faiss_ivf``, ``faiss_ivfpq``: :mod:`ragopt.indexes.faiss_index`
* ``torch_exact``: matrix product + top-k on CPU or GPU, :mod:`ragopt.indexes.torch_index`
* ``chroma``: an embedded Chroma collection of our own vectors, :mod:`ragopt.indexes.chroma_index`

Backends are imported only when a config names them.
"""

from ragopt.indexes.base import DenseIndex

__all__ = ["DenseIndex"]
