"""Ray orchestration: embedding actors over shards, the coreset merge, Ray Train DDP.

Only this package imports Ray. The math it runs (attack, embeddings, selectors, the epoch
loop) is the same code the single-process path runs.
"""
