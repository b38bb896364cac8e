"""Our samplers against diffusers' schedulers on the same UNet, noise and timesteps."""
import pytest
import torch
from diffusers import DDIMScheduler, EulerDiscreteScheduler, HeunDiscreteScheduler, UNet2DModel

import samplers
from genstudio.core.paths import VPDiscretePath
from genstudio.model import Guided, Model, on_edm_path
from genstudio.nets import UNetBackbone
from samplers.grids import make_grid
from tests.helpers import MICRO_UNET


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


def _eps_unet_model():
    torch.manual_seed(0)
    unet = UNet2DModel(sample_size=8, in_channels=3, out_channels=3, **MICRO_UNET).eval()
    return unet, Model(UNetBackbone(unet), VPDiscretePath(), "eps")


def _diffusers_loop(sched, unet, x):
    """diffusers' own loop: sample scaled by init_noise_sigma, model input scaled per step."""
    sample = x * sched.init_noise_sigma
    with torch.no_grad():
        for t in sched.timesteps:
            eps = unet(sched.scale_model_input(sample, t), t).sample
            sample = sched.step(eps, t, sample).prev_sample
    return sample


def _sigmas_as_our_grid(sched):
    # diffusers' sigmas are sigma / alpha of its timesteps; on the EDM view of our model t' = sigma / alpha.
    # (Heun's list repeats each intermediate sigma for its two half-steps.)
    return torch.unique_consecutive(sched.sigmas.double())


@pytest.mark.parametrize("ours, scheduler_cls", [("euler", EulerDiscreteScheduler), ("heun", HeunDiscreteScheduler)])
def test_euler_and_heun_on_the_edm_view_match_diffusers(ours, scheduler_cls):
    # diffusers integrates x / alpha in sigma = sigma / alpha (k-diffusion's convention): our sampler on the
    # EDM view of the same eps model, on the same sigmas, takes the same steps. "leading" spacing keeps the
    # timesteps integers, where our t = index + 1 has exactly diffusers' sigma.
    unet, model = _eps_unet_model()
    sched = scheduler_cls(num_train_timesteps=1000, beta_start=1e-4, beta_end=0.02, beta_schedule="linear",
                          timestep_spacing="leading", steps_offset=1)
    sched.set_timesteps(8)
    x = torch.randn(2, 3, 8, 8)
    ref = _diffusers_loop(sched, unet, x)
    ts = _sigmas_as_our_grid(sched)
    view = on_edm_path(model)
    with torch.no_grad():
        out = samplers.get(ours).fn(Guided(view), x * sched.init_noise_sigma, ts)  # x / alpha of a VP prior draw
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4)
