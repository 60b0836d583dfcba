"""Work beyond one machine on an existing distributed engine.

* :class:`~ragopt.distributed.ray_shards.RayShardRunner`: corpus encoding on a Ray cluster. Used as the shard
  runner of :func:`ragopt.encoders.shards.use_shard_runner` (``ragopt index ... --ray ADDRESS``), it encodes the
  missing shards of a corpus' embeddings on Ray actors; this process writes them, so the embeddings artifact, its
  key and its shards are those of a single-machine build, and search, tuning and the MCP service use it unchanged.

Ray is imported when a runner first runs (``pip install 'ragopt[ray]'``), never by ``import ragopt``.
"""

from ragopt.distributed.ray_shards import RayShardRunner

__all__ = ["RayShardRunner"]
