"""diffusers interop (the diffusion family's): load a DDPM/DDIM pipeline folder, export a DDIMPipeline folder."""
from .families.diffusion.interop import (
                                         diffusers_scheduler_config,
                                         export_diffusers,
                                         load_diffusers_pipeline,
                                         path_from_scheduler_config,
)

__all__ = ["load_diffusers_pipeline", "export_diffusers", "path_from_scheduler_config", "diffusers_scheduler_config"]
