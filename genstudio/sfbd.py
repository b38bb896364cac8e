"""SFBD: Stochastic Forward-Backward Deconvolution (Lu, Wu, Yu, ICML 2025): train when most images exist only as one
noisy copy y = x + sigma eps each. Pretrain on the small clean fraction, then alternate
  - denoise: every noisy copy through the current model, from the noise level sigma down to t = 0, and
  - retrain: a normal training run (any diffusion or flow family) on the clean images plus the denoised ones.

`plan.clean_only` is the control: the same runs with every round on the clean images alone.
`sfbd(plan, out)` runs every stage in `out`; `out/state.json` (written atomically) lists the stages done, so a killed
pipeline resumes at the stage it stopped in, and that stage resumes too (a training run from its checkpoint, the
denoising at the first image not yet written). The noisy copy is genstudio.data.noisy_copy: fixed by the seed."""
from __future__ import annotations

import inspect
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

import samplers
from samplers.grids import make_grid
from samplers.run import run_sampler

from .atomic import write_json
from .checks import read_json_object
from .config import ConfigError, check_noisy, config_from_dict
from .core.noise import generators
from .data import fixed_subset, load_images, noisy_copy, noisy_split
from .images import save_png, to_uint8
from .model import Guided

DENOISE_SEED = 2_000_000  # round r denoises copy i with the noise of seed DENOISE_SEED + r * n + i


@dataclass(frozen=True)
class SFBDPlan:
    config: dict[str, Any]        # the training config (every section), used by every stage
    sigma: float                  # the noisy copies' noise, in model range [-1, 1]
    clean_fraction: float         # the images kept clean
    seed: int = 0                 # which images stay clean, and the copies' noise
    rounds: int = 1
    pretrain_steps: int = 1000
    round_steps: int = 1000       # each retraining run, from the previous round's weights
    sampler: str = "heun"         # the denoiser's sampler (an ODE or SDE one) and its steps from sigma to 0
    steps: int = 10
    clean_only: bool = False      # the control: every round retrains on the clean images alone (no denoising)

    def __post_init__(self):
        check_noisy(self.noisy("clean"))
        for key in ("rounds", "pretrain_steps", "round_steps", "steps"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"sfbd {key} = {value!r} must be a positive integer")
        samplers.get(self.sampler)  # an unknown name is an error naming the samplers
        if self.config.get("data", {}).get("noisy"):
            raise ConfigError("sfbd sets data.noisy itself: leave it unset in its config (data.limit, if set, "
                              "picks the images SFBD works on)")

    def noisy(self, part: str) -> dict[str, Any]:
        return {"sigma": self.sigma, "clean_fraction": self.clean_fraction, "seed": self.seed, "part": part}


def gaussian_round(m: float, v: float, mu: float, s2: float, sigma: float, c: float,
                   stochastic: bool) -> tuple[float, float]:
    """One SFBD round in closed form, for data N(mu, s2), a Gaussian model N(m, v) and infinitely many images, a
    fraction c of them clean. Denoising y = x + sigma eps from sigma with the model: the probability-flow ODE maps
    y -> m + sqrt(v / (v + sigma^2)) (y - m); the reverse SDE samples the model's posterior
    N(m + k (y - m), k sigma^2), k = v / (v + sigma^2). Retraining fits (moment-matches) clean + denoised. The data
    is a fixed point of both, and the rounds converge to it (Lu et al. 2025, Sec. 4)."""
    k = v / (v + sigma**2)
    gain = k if stochastic else k**0.5
    m_d = m + gain * (mu - m)
    v_d = gain**2 * (s2 + sigma**2) + (k * sigma**2 if stochastic else 0.0)
    m_new = c * mu + (1 - c) * m_d
    v_new = c * (s2 + (mu - m_new) ** 2) + (1 - c) * (v_d + (m_d - m_new) ** 2)
    return m_new, v_new


def denoise(model, noisy: Tensor, sigma: float, sampler: str, steps: int, labels: Tensor | None = None,
            seeds: list[int] | None = None) -> Tensor:
    """Noisy copies y = x + sigma eps (model range) through `model` from the time where sigma/alpha = sigma down to
    0: the state there is x_t = alpha(t) y. `seeds` (one per image) give a stochastic sampler its noise."""
    path = model.path
    t = float(path.t_from_sigma_tilde(torch.tensor(float(sigma), dtype=torch.float64)))
    spec = samplers.get(sampler, model)
    grid = samplers.default_grid(spec, path)
    if "t_max" not in inspect.signature(samplers.GRIDS[grid]).parameters:
        grid = "karras"
    ts = make_grid(grid, path, steps, t_max=min(t, float(path.t_max)))
    start = noisy * float(path.alpha(torch.tensor(t, dtype=torch.float64)))
    gens = generators(seeds) if seeds is not None else None
    return run_sampler(spec, Guided(model, labels), None, ts, start=start, generator=gens)


def _train_config(plan: SFBDPlan, out: Path, steps: int, data: dict[str, Any], init_from: str = "") -> dict:
    cfg = {k: dict(v) for k, v in plan.config.items()}
    cfg["data"] = {**cfg.get("data", {}), **data}
    cfg["train"] = {**cfg.get("train", {}), "output_dir": str(out), "max_steps": steps, "init_from": init_from}
    return cfg


def _train(cfg: dict[str, Any]) -> Path:
    """A normal training run, resumed from its checkpoint if one is there; returns its exported model."""
    from .train import run
    from .train.state import exported_step

    out = Path(cfg["train"]["output_dir"])
    if exported_step(out) != cfg["train"]["max_steps"]:
        run(config_from_dict(cfg), resume=True)
    return out / "model"


def _denoise_round(plan: SFBDPlan, model_dir: Path, folder: Path, r: int, batch_size: int = 250) -> Path:
    """The retraining set of round r: the clean images and the denoised noisy copies, one PNG each in a folder per
    class ("000", "001", ...: the data loader reads the labels back); images already written are kept."""
    from .checkpoint import load_model

    d = plan.config.get("data", {})
    data = load_images(d.get("source", "cifar10"), split=d.get("split", "train"), image_size=d.get("image_size", 32),
                       cache_dir=d.get("cache_dir") or None)
    subset = fixed_subset(len(data.images), d.get("limit", 0), plan.config.get("train", {}).get("seed", 0))
    images, labels = data.images[subset], data.labels[subset]   # what the pretraining run's data.noisy split
    n = len(images)
    clean, noisy = noisy_split(n, plan.clean_fraction, plan.seed)

    def file(i: int) -> Path:
        return folder / f"{max(int(labels[i]), 0):03d}" / f"{i:06d}.png"

    for i in clean.tolist():
        if not file(i).is_file():
            save_png(images[i].permute(1, 2, 0).numpy(), file(i))
    todo = [i for i in noisy.tolist() if not file(i).is_file()]
    if todo:
        model, _ = load_model(model_dir)
        for s in range(0, len(todo), batch_size):
            idx = torch.tensor(todo[s:s + batch_size])
            y = noisy_copy(images, idx, plan.sigma, plan.seed)
            given = labels[idx] if model.num_classes else None
            with torch.no_grad():
                x = denoise(model, y, plan.sigma, plan.sampler, plan.steps, given,
                            [DENOISE_SEED + r * n + int(i) for i in idx])
            for i, img in zip(idx.tolist(), to_uint8(x)):
                save_png(img, file(i))  # atomic
    return folder


def sfbd(plan: SFBDPlan, out: str | Path) -> dict[str, Any]:
    """Run (or resume) SFBD in `out`: pretrain/, then round_<r>/data (clean + denoised) and round_<r>/train for
    r = 1..rounds. Returns the record (stages, models), also written to out/state.json."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    plan_file, plan_dict = out / "sfbd.json", asdict(plan)
    if plan_file.is_file() and read_json_object(plan_file) != plan_dict:
        raise ValueError(f"{out} holds an SFBD run with another plan ({plan_file}); use another out folder")
    if not plan_file.is_file():
        write_json(plan_file, plan_dict)
    state_file = out / "state.json"
    state: dict[str, Any] = read_json_object(state_file) if state_file.is_file() else {"done": [], "models": {}}
    t0 = time.perf_counter()

    def stage(name: str, work) -> None:
        if name in state["done"]:
            return
        result = work()
        state["done"].append(name)
        if isinstance(result, Path) and result.name == "model":
            state["models"][name] = str(result)
        write_json(state_file, state)

    stage("pretrain", lambda: _train(_train_config(plan, out / "pretrain", plan.pretrain_steps, {
        "noisy": plan.noisy("clean")})))
    model = out / "pretrain" / "model"
    for r in range(1, plan.rounds + 1):
        data: dict[str, Any] = {"noisy": plan.noisy("clean")}
        if not plan.clean_only:
            folder = out / f"round_{r}" / "data"
            stage(f"denoise_{r}", lambda m=model, d=folder, r=r: _denoise_round(plan, m, d, r))
            data = {"source": str(folder), "split": "train", "limit": 0, "noisy": {}}
        cfg = _train_config(plan, out / f"round_{r}" / "train", plan.round_steps, data, init_from=str(model))
        stage(f"train_{r}", lambda c=cfg: _train(c))
        model = out / f"round_{r}" / "train" / "model"
    state["seconds_this_call"] = round(time.perf_counter() - t0, 1)
    write_json(state_file, state)
    return state
