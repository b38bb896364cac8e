"""Our samplers against diffusers' schedulers on the same UNet, noise and timesteps."""
import torch
from diffusers import DDIMScheduler, UNet2DModel

import samplers
from genstudio.model import Guided, Model
from genstudio.networks import UNetBackbone
from genstudio.paths import VPDiscretePath
from samplers.grids import make_grid

from .conftest import MICRO_UNET


def test_ddim_on_the_discrete_path_matches_diffusers_ddim_scheduler():
    torch.manual_seed(0)
    unet = UNet2DModel(sample_size=8, in_channels=3, out_channels=3, **MICRO_UNET).eval()
    model = Model(UNetBackbone(unet), VPDiscretePath(), "eps")
    x = torch.randn(2, 3, 8, 8)

    sched = DDIMScheduler(num_train_timesteps=1000, beta_schedule="linear", clip_sample=False,
                          set_alpha_to_one=True, steps_offset=0, timestep_spacing="leading")
    sched.set_timesteps(10)
    ref = x.clone()
    with torch.no_grad():
        for t in sched.timesteps:
            ref = sched.step(unet(ref, t).sample, t, ref, eta=0.0).prev_sample
        ts = make_grid("ddpm", model.path, 10)
        assert [int(v) - 1 for v in ts[:-1]] == sched.timesteps.tolist()
        ours = samplers.get("ddim").fn(Guided(model), x, ts)
    torch.testing.assert_close(ours, ref, rtol=1e-4, atol=1e-4)
