"""Pure numeric kernels (numpy/scipy only; nothing from ragopt but its errors): top-k selection, fusion,
passage aggregation, learned-sparse scoring, CUR cross-encoder search."""
