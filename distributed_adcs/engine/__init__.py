"""Single-process training engine: the epoch loop, schedules, checkpoints and the job plan.

Distributed orchestration (``distributed_adcs.distributed``) reuses these pieces unchanged.
"""
