"""Interop with diffusers: load a DDPM/DDIM pipeline folder as a genstudio model, and export our
discrete-VP diffusion models as folders that `diffusers.DDIMPipeline.from_pretrained` loads.

A diffusers pipeline folder (the layout of google/ddpm-cifar10-32):

    model_index.json                         {"_class_name": "DDPMPipeline", "unet": [...], "scheduler": [...]}
    unet/config.json                         UNet2DModel config
    unet/diffusion_pytorch_model.safetensors
    scheduler/scheduler_config.json          num_train_timesteps, beta_start, beta_end, beta_schedule, prediction_type

Time convention: diffusers' timestep index j is our t = j + 1 on `VPDiscretePath`, whose noise label
t - 1 is exactly what a diffusers pipeline feeds its UNet; so a diffusers UNet needs no
preconditioning (NoPrecond) and a genstudio model on that path needs no change to run in diffusers.

Only safetensors are read, by genstudio itself (genstudio.nets.UNetBackbone.load): a folder holding a pickled `.bin`
(or an index naming one) is refused, never unpickled; every JSON file is size-capped and checked field by field, and
the loaded model must give a finite output on a probe image (genstudio.checks).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from genstudio.atomic import atomic_folder, write_json
from genstudio.checks import MAX_NUM_STEPS, Problems, probe, read_json_object, refuse_pickles, short
from genstudio.core.paths import VPDiscretePath
from genstudio.core.precond import NoPrecond
from genstudio.model import Model
from genstudio.nets import CheckpointError, UNetBackbone, first_non_finite, save_components

# diffusers' prediction_type <-> our native prediction names (both define v = alpha eps - sigma x0).
PREDICTION_FROM_DIFFUSERS = {"epsilon": "eps", "sample": "x0", "v_prediction": "v"}
PREDICTION_TO_DIFFUSERS = {v: k for k, v in PREDICTION_FROM_DIFFUSERS.items()}

PIPELINES = ("DDPMPipeline", "DDIMPipeline")
# Schedulers that share DDPM's discrete training schedule and feed the UNet the integer timestep index.
SCHEDULERS = ("DDPMScheduler", "DDIMScheduler", "PNDMScheduler", "DPMSolverMultistepScheduler")
_UNSUPPORTED_SCHEDULES = {
    "scaled_linear": "betas = linspace(sqrt(beta_start), sqrt(beta_end), N)^2",
    "squaredcos_cap_v2": "the iDDPM cosine betas capped at 0.999",
}


def _read_json(file: Path, what: str) -> dict[str, Any]:
    """A JSON object, size- and depth-capped (genstudio.checks.read_json)."""
    if not file.exists():
        raise CheckpointError(f"{file} is missing: not a diffusers pipeline folder ({what})")
    return read_json_object(file)


def path_from_scheduler_config(config: dict[str, Any]) -> tuple[VPDiscretePath, str]:
    """(path, native prediction) of a diffusers scheduler config; what genstudio cannot represent
    exactly is a CheckpointError that says so."""
    name = config.get("_class_name", "?")
    if not isinstance(name, str) or name not in SCHEDULERS:
        raise CheckpointError(f"scheduler {name!r} is not supported; genstudio reads the discrete DDPM schedule "
                              f"of {', '.join(SCHEDULERS)}")
    p = Problems("scheduler_config.json")
    n = p.integer(config, "num_train_timesteps", 1, MAX_NUM_STEPS, default=1000)
    beta_start = p.real(config, "beta_start", 0, 1, default=1e-4, lo_open=True, hi_open=True)
    beta_end = p.real(config, "beta_end", 0, 1, default=0.02, lo_open=True, hi_open=True)
    schedule = p.string(config, "beta_schedule", default="linear")
    kind = p.string(config, "prediction_type", default="epsilon")  # configs older than diffusers 0.10 lack it
    for key in ("clip_sample", "rescale_betas_zero_snr", "thresholding", "set_alpha_to_one"):
        p.boolean(config, key, default=False)
    p.real(config, "clip_sample_range", 0, 1e4, default=1.0, lo_open=True)
    p.real(config, "sample_max_value", 0, 1e4, default=1.0, lo_open=True)
    p.real(config, "dynamic_thresholding_ratio", 0, 1, default=0.995, lo_open=True)
    p.integer(config, "steps_offset", 0, MAX_NUM_STEPS, default=0)
    p.choice(config, "timestep_spacing", ("leading", "trailing", "linspace"), default="leading")
    p.choice(config, "variance_type", (None, "fixed_small", "fixed_small_log", "fixed_large", "fixed_large_log",
                                       "learned", "learned_range"), default=None)
    p.string(config, "_diffusers_version", default=None, max_len=64)
    p.check()
    if beta_start > beta_end:
        raise CheckpointError(f"scheduler_config.json: beta_start = {beta_start:g} must be <= beta_end = "
                              f"{beta_end:g}")
    if config.get("trained_betas") is not None:
        raise CheckpointError("a scheduler with explicit trained_betas is not supported yet "
                              "(genstudio's vp_discrete path has linear betas only)")
    if schedule in _UNSUPPORTED_SCHEDULES:
        raise CheckpointError(f"beta_schedule {schedule!r} ({_UNSUPPORTED_SCHEDULES[schedule]}) is not supported yet: "
                              "genstudio's vp_discrete path has linear betas only")
    if schedule != "linear":
        raise CheckpointError(f"unknown beta_schedule {schedule!r}; supported: 'linear'")
    if config.get("rescale_betas_zero_snr"):
        raise CheckpointError("rescale_betas_zero_snr=True (zero terminal SNR) is not supported yet")
    if kind not in PREDICTION_FROM_DIFFUSERS:
        raise CheckpointError(f"prediction_type {kind!r} is not supported; "
                              f"known: {', '.join(PREDICTION_FROM_DIFFUSERS)}")
    path = VPDiscretePath(num_steps=n, beta_start=beta_start, beta_end=beta_end, t_min=1.0, t_max=float(n))
    return path, PREDICTION_FROM_DIFFUSERS[kind]


def is_diffusers_pipeline(folder: Path) -> bool:
    return (folder / "model_index.json").is_file()


def load_diffusers_pipeline(folder: str | Path, device: str | torch.device | None = None,
                            dtype: torch.dtype | None = None) -> tuple[Model, dict[str, Any]]:
    """Load a diffusers DDPM/DDIM pipeline folder as (Model, meta); meta is shaped like genstudio.json
    with "source": "diffusers" and the original scheduler config under "diffusers"."""
    folder = Path(folder)
    if not folder.is_dir():
        raise CheckpointError(f"{folder} is not a diffusers pipeline folder (no such directory)")
    index = _read_json(folder / "model_index.json", "model_index.json")
    pipeline = index.get("_class_name")
    if pipeline not in PIPELINES:
        raise CheckpointError(f"{folder} holds a {pipeline!r}; genstudio loads {' and '.join(PIPELINES)} folders "
                              "(an unconditional UNet2DModel plus a DDPM-style scheduler)")
    unet_entry = index.get("unet")
    if not (isinstance(unet_entry, list) and unet_entry[-1:] == ["UNet2DModel"]):
        raise CheckpointError(f"{folder}: model_index.json's unet is {short(unet_entry)}, not a diffusers UNet2DModel")
    scheduler_entry = index.get("scheduler")
    if not (isinstance(scheduler_entry, list) and len(scheduler_entry) == 2 and
            all(isinstance(x, str) and len(x) <= 64 for x in scheduler_entry)):
        raise CheckpointError(f"{folder}: model_index.json's scheduler is {short(scheduler_entry)}, not a "
                              "[library, class] pair")
    version = index.get("_diffusers_version")
    if version is not None and not (isinstance(version, str) and len(version) <= 64):
        raise CheckpointError(f"{folder / 'model_index.json'}: _diffusers_version = {version!r} must be a short "
                              "string")
    sched = _read_json(folder / "scheduler" / "scheduler_config.json", "scheduler config")
    try:
        path, prediction = path_from_scheduler_config(sched)
    except CheckpointError as e:
        raise CheckpointError(f"{folder / 'scheduler'}: {e}") from None
    unet_dir = folder / "unet"
    refuse_pickles(unet_dir)
    refuse_pickles(folder / "scheduler", weights=False)
    if not (unet_dir / "config.json").is_file():
        raise CheckpointError(f"{unet_dir / 'config.json'} is missing")
    try:
        network = UNetBackbone.load(unet_dir, dtype=dtype)
    except CheckpointError:
        raise
    except (OSError, ValueError, KeyError, RuntimeError, TypeError) as e:
        raise CheckpointError(f"cannot load {unet_dir}: {type(e).__name__}: {e}") from None
    cfg = network.config
    if cfg["out_channels"] != cfg["in_channels"]:
        raise CheckpointError(f"{unet_dir}: the UNet outputs {cfg['out_channels']} channels for {cfg['in_channels']} "
                              "input channels (a learned-variance model?); genstudio needs one prediction per pixel")
    if cfg.get("num_class_embeds") is not None or cfg.get("class_embed_type") is not None:
        raise CheckpointError(f"{unet_dir}: a class-conditional UNet is not supported (a DDPM/DDIM pipeline "
                              "passes no class labels, so there is no known 'no label' class)")
    if not isinstance(cfg["sample_size"], int):
        raise CheckpointError(f"{unet_dir}: non-square sample_size {cfg['sample_size']} is not supported")
    model = Model(network, path, prediction, NoPrecond(), num_classes=0, family="diffusion", kind="field")
    meta = {**model.spec(), "components": {"unet": {"network": UNetBackbone.name}},
            "defaults": {"sampler": "ddim", "steps": 50, "grid": "ddpm",
                         "options": {"clip_denoised": True} if sched.get("clip_sample", False) else {}},
            "training": {},
            "source": "diffusers",
            "diffusers": {"pipeline": pipeline, "version": version, "scheduler": sched,
                          # DDPMPipeline/DDIMPipeline clip x0 to [-1, 1] when this is set; our samplers'
                          # clip_denoised=True matches DDIM with use_clipped_model_output=True.
                          "clip_sample": bool(sched.get("clip_sample", False))}}
    model = model.to(device or "cpu").eval()
    probe(model, folder)
    return model, meta


def diffusers_scheduler_config(model: Model) -> dict[str, Any]:
    """DDIMScheduler settings that reproduce `model`'s path; ValueError if diffusers cannot represent it."""
    problems = []
    if getattr(model, "kind", "field") != "field":
        problems.append(f"it is a {model.kind} model (a jump (x, t) -> (x, s)), while diffusers' schedulers "
                        "integrate a field")
    if not isinstance(model.precond, NoPrecond):
        problems.append(f"it uses {model.precond.name!r} preconditioning (c_skip/c_out/c_in/c_noise around the "
                        "network), which a diffusers pipeline does not apply: it feeds the raw UNet x_t and the "
                        "timestep index")
    if type(model.path) is not VPDiscretePath:
        problems.append(f"its noise path is {model.path.name!r}; DDIMScheduler runs on a discrete linear-beta "
                        "VP schedule (genstudio's 'vp_discrete')")
    if model.prediction not in PREDICTION_TO_DIFFUSERS:
        problems.append(f"its prediction is {model.prediction!r}; DDIMScheduler takes epsilon, sample (x0) or "
                        "v_prediction")
    if model.num_classes:
        problems.append(f"it is class-conditional ({model.num_classes} classes); DDIMPipeline passes no labels")
    if set(model.components()) != {"unet"} or type(model.network) is not UNetBackbone:
        problems.append("its network is not a diffusers UNet2DModel")
    if problems:
        raise ValueError("diffusers cannot represent this model: " + "; ".join(problems))
    path = model.path
    return dict(num_train_timesteps=path.num_steps, beta_start=path.beta_start, beta_end=path.beta_end,
                beta_schedule="linear", trained_betas=None, prediction_type=PREDICTION_TO_DIFFUSERS[model.prediction],
                clip_sample=False, set_alpha_to_one=True, steps_offset=0, timestep_spacing="leading",
                thresholding=False, rescale_betas_zero_snr=False)


def export_diffusers(model: Model, folder: str | Path) -> Path:
    """Write `model` (vp_discrete path, no preconditioning, eps/x0/v, unconditional) as a diffusers
    DDIMPipeline folder: model_index.json, unet/ (safetensors), scheduler/ (DDIMScheduler config).
    The folder is written atomically; `load_diffusers_pipeline` reads it back."""
    import diffusers

    config = diffusers_scheduler_config(model)
    if (name := first_non_finite(model)) is not None:
        raise ValueError(f"refusing to export a model with non-finite weights ({name})")
    with atomic_folder(folder) as tmp:
        save_components(model.components(), tmp)
        diffusers.DDIMScheduler(**config).save_pretrained(str(tmp / "scheduler"))
        write_json(tmp / "model_index.json", {"_class_name": "DDIMPipeline",
                                              "_diffusers_version": diffusers.__version__,
                                              "scheduler": ["diffusers", "DDIMScheduler"],
                                              "unet": ["diffusers", "UNet2DModel"]})
    return Path(folder)


__all__ = ["load_diffusers_pipeline", "export_diffusers", "path_from_scheduler_config", "diffusers_scheduler_config"]
