"""Sampling: the cache plan, cache policies (Skip-Cache, forecast, DeepCache, FORA,
Δ-DiT, none), the two compiled step functions and the host loop.

Entry point: `generate(model, params, diffusion, labels, rng, ...) -> np.ndarray`.
"""
from skipdit_jax.sampling.cache_plan import FULL, CachePlan, describe
from skipdit_jax.sampling.policies import POLICIES
from skipdit_jax.sampling.sampler import (Sampler, generate, get_sampler, make_plan,
                                          options_from_config, plan_for)
from skipdit_jax.sampling.steps import SAMPLERS, SolverConfig

__all__ = ["FULL", "POLICIES", "SAMPLERS", "CachePlan", "Sampler", "SolverConfig",
           "describe", "generate", "get_sampler", "make_plan",
           "options_from_config", "plan_for"]
