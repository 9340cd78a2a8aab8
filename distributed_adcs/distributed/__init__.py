"""Ray orchestration: embedding actors and Ray Train ranks as shard strategies, Ray Train DDP.

Only this package imports Ray. The math it runs (attack, embeddings, selectors, the merge, the
epoch loop) is the same code the single-process path runs (``engine/``).
"""
