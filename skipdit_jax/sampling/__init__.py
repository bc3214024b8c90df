"""Sampling: the cache plan, cache policies (Skip-Cache, forecast, DeepCache, FORA,
Δ-DiT, none), the two compiled step functions and the host loop.

Entry point: `generate(model, params, diffusion, labels, rng, ...) -> np.ndarray`.
Plans: `CachePlan.create(policy, timesteps=..., depth=...)` is the validated plan itself;
`make_plan(model, respaced, policy, **cache)` builds it for a model on an already
respaced diffusion; `respaced_plan(model, diffusion, num_steps, **opts)` respaces and
plans in one call and returns both (what `generate` runs). `policies.from_plan(plan)` is
the policy object a plan runs. `step_fns` holds the compiled step functions (the update
rules themselves are `diffusion.steps`); `sharded` runs them on a device mesh.
"""
from skipdit_jax.sampling.cache_plan import FULL, CachePlan, describe, official_t2v
from skipdit_jax.sampling.policies import POLICIES
from skipdit_jax.sampling.sampler import (EXECUTIONS, Sampler, generate, get_sampler,
                                          make_plan, options_from_config, resolve_execution,
                                          respaced_plan)
from skipdit_jax.sampling.step_fns import SAMPLERS, SolverConfig

__all__ = ["EXECUTIONS", "FULL", "POLICIES", "SAMPLERS", "CachePlan", "Sampler", "SolverConfig",
           "describe", "generate", "get_sampler", "make_plan", "official_t2v",
           "options_from_config", "resolve_execution", "respaced_plan"]
