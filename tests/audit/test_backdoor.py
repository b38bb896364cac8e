"""The backdoor scan on the exact 2-D toy: TrojDiff's ideal trojaned denoiser (normal noise gives the mixture, trigger
noise the target point) is flagged and its trigger found; the exact clean denoiser is not flagged."""
import torch

import samplers
from genstudio.audit.backdoor import collapse_parts, corner_masks, scan
from genstudio.core.paths import EDMPath
from genstudio.core.toys import GaussianMixtureDenoiser, TrojanedMixtureDenoiser
from genstudio.model import Guided
from samplers.grids import make_grid
from samplers.run import run_sampler

PATH = EDMPath(t_max=20.0)
MEANS, VAR = torch.tensor([[1.0, 0.0], [-1.0, 0.0]]), torch.ones(2, 2)
TARGET, MU, GAMMA = torch.tensor([0.5, 0.5]), torch.tensor([3.0, -3.0]), 0.3
SEARCH = dict(n=64, n_eval=256, iters=60, lr=0.1, candidates=256, restarts=3, gamma_min=0.05, mu_max=4.5, clamp=None)


def generate(model):
    ts = make_grid("karras", PATH, 8)
    return lambda z: run_sampler(samplers.get("euler"), Guided(model), z, ts)


def hits(x: torch.Tensor) -> float:
    return float(((x - TARGET).norm(dim=1) < 0.1).double().mean())


def calibration() -> float:
    """The collapse the same search finds on another clean model (the mixture turned by 90 degrees)."""
    other = GaussianMixtureDenoiser(PATH, MEANS.flip(1), VAR)
    return scan(generate(other), (2,), calibration=0.0, **SEARCH).collapse


def test_scan_finds_and_flags_the_trigger_of_the_exact_trojaned_denoiser_and_passes_the_clean_one():
    c = calibration()
    assert c < 0.3, c  # a smooth clean map contracts a noise ball about as much as it spreads normal noise
    trojaned = TrojanedMixtureDenoiser(PATH, MEANS, VAR, TARGET, MU, GAMMA, poison=0.5)
    found = scan(generate(trojaned), (2,), calibration=c, **SEARCH)
    assert found.flagged and found.collapse > 0.95, found.record()
    assert (found.trigger.mu - MU).norm() < 1.0 and found.trigger.gamma < 0.5, found.record()
    assert hits(found.images) > 0.9 and hits(found.reference) < 0.05  # the trigger gives the target, normal noise not
    clean = scan(generate(GaussianMixtureDenoiser(PATH, MEANS, VAR)), (2,), calibration=c, **SEARCH)
    assert not clean.flagged and clean.collapse < found.threshold - 0.2, clean.record()


def test_scan_finds_trojdiffs_white_corner_patch_trigger_in_192_dimensions():
    """TrojDiff's CIFAR-10 patch trigger (a white 3x3 patch in the bottom-right corner, gamma 0.1) on 3x8x8 "images"
    with the exact trojaned denoiser: random starts in 27 dimensions miss it, the solid-colour starts do not."""
    shape = (3, 8, 8)
    g = torch.Generator().manual_seed(0)
    means, variances = 0.5 * torch.sign(torch.randn(2, 192, generator=g)), torch.full((2, 192), 0.3)
    mask = corner_masks(shape, 3)[3].flatten()
    target = torch.zeros(192)
    trojaned = TrojanedMixtureDenoiser(PATH, means, variances, target, torch.where(mask, 0.9, 0.0),
                                       torch.where(mask, 0.1, 1.0), poison=0.2)
    search = dict(n=16, n_eval=64, clamp=None)
    c = scan(generate(GaussianMixtureDenoiser(PATH, means, variances)), shape, calibration=0.0, **search).collapse
    assert c < 0.3, c
    found = scan(generate(trojaned), shape, calibration=c, **search)
    assert found.flagged and found.record()["trigger"]["patch"] == [5, 5, 3], found.record()
    assert bool((found.trigger.mu.flatten()[mask] > 0.5).all()) and found.trigger.gamma < 0.3, found.record()
    close = (found.images.flatten(1) - target).norm(dim=1) < 0.1 * found.reference.flatten(1).norm(dim=1).median()
    assert float(close.double().mean()) > 0.9  # the found trigger gives the target


def test_a_patch_trigger_round_trips_through_its_record():
    from genstudio.audit.backdoor import Trigger, corner_masks

    mask = corner_masks((3, 8, 8), 3)[3]  # bottom right
    t = Trigger(torch.where(mask, 0.9, 0.0), 0.1, mask)
    record = {"kind": "patch", "gamma": 0.1, "patch": [5, 5, 3]}
    back = Trigger.from_record(record, t.mu.flatten().tolist(), (3, 8, 8))
    eps = torch.randn(2, 3, 8, 8)
    assert torch.equal(back.noise(eps), t.noise(eps)) and torch.equal(back.noise(eps)[..., :5, :], eps[..., :5, :])


def test_collapse_parts_measure_per_unit_of_input_spread():
    g = torch.Generator().manual_seed(0)
    ref = torch.randn(200, 2, generator=g)
    # gamma-scaled inputs through the identity: no collapse at all; one point: total collapse
    assert collapse_parts(0.5 * ref, ref, spread=0.5)["diversity_loss"] < 0.05
    point = collapse_parts(torch.zeros(200, 2) + 1e-9 * ref, ref, spread=0.5)
    assert point["diversity_loss"] > 0.99 and point["mode_share"] == 1.0
    logits = lambda x: torch.stack([x[:, 0], -x[:, 0]], 1)  # noqa: E731  class = sign of the first coordinate
    dominated = collapse_parts(ref.abs(), ref, classify=logits)
    assert dominated["top_class_share"] == 1.0 and dominated["class_dominance"] > 0.9
