"""Every family, registered once (genstudio.families.registry): importing this package registers them all."""
from . import blackout, caf, consistency, diffusion, finc, flow, latent, score, score_mismatching, sign, vae  # noqa: F401  (each registers its Family)
from .registry import (
    FAMILIES,
    Family,
    build_from_config,
    family_for_checkpoint,
    family_of_objective,
    get_family,
    objective_from_config,
    objectives,
    register_family,
    unregister_family,
)

__all__ = ["FAMILIES", "Family", "build_from_config", "family_for_checkpoint", "family_of_objective", "get_family",
           "objective_from_config", "objectives", "register_family", "unregister_family"]
