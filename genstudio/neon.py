"""Neon: negative extrapolation from self-training (Alemohammad, Wang, Baraniuk, ICLR 2026). Sample a set S from the
base model with its usual mode-seeking sampler, fine-tune the base briefly on S, then move away from the fine-tuned
weights: theta_w = (1 + w) theta_base - w theta_finetuned, w > 0 (their Eq. 3). Self-training on mode-seeking samples
pulls a model toward its modes; extrapolating the other way restores what the sampler under-covers.

`neon(checkpoint, out)` runs every stage in `out`, each resumable: S (one PNG per seed), the fine-tune (a normal
training run of the base's own recipe, `train.init_from` the base), the w sweep (scored on the selection seeds, one
candidate checkpoint per w, scores cached in sweep.json), and the chosen model (out/model, with its card). Seeds: S
from SELF_SEED, selection from SELECTION_SEED, reports from 0 (`seed_sets` checks they are disjoint)."""
from __future__ import annotations

import math
import shutil
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

import torch
from torch import Tensor

from .atomic import atomic_folder, write_json
from .checkpoint import export_model, load_model, read_meta
from .checks import read_json_object
from .config import ConfigError, config_from_dict
from .images import save_png

SELF_SEED = 1_000_000     # S: images from seeds SELF_SEED + i
SELECTION_SEED = 50_000   # w is chosen on samples from seeds SELECTION_SEED + i
REPORT_SEED = 0           # reported scores use seeds 0 .. n-1 (the evaluator's default)
BASE_SAMPLES = "base_samples.png"  # the base's samples.png, kept beside the merged model


def merge(base: dict[str, Tensor], tuned: dict[str, Tensor], w: float) -> dict[str, Tensor]:
    """(1 + w) base - w tuned for every floating-point tensor (computed in float64, stored in base's dtype); other
    tensors (integer buffers) are taken from base. w = 0 returns base exactly."""
    if set(base) != set(tuned):
        raise ValueError(f"the two state dicts hold different tensors: {sorted(set(base) ^ set(tuned))[:5]}")
    out = {}
    for k, b in base.items():
        t = tuned[k]
        if b.shape != t.shape:
            raise ValueError(f"{k}: shapes {tuple(b.shape)} and {tuple(t.shape)} differ")
        if not b.is_floating_point() or w == 0:
            out[k] = b.clone()
        else:
            out[k] = ((1 + w) * b.double() - w * t.to(b.device).double()).to(b.dtype)
    return out


def seed_sets(n_self: int, n_select: int, n_report: int) -> dict[str, tuple[int, int]]:
    """The first and last seed of S, the selection set and the report set; an error if any two overlap."""
    sets = {"self": (SELF_SEED, SELF_SEED + n_self - 1), "selection": (SELECTION_SEED, SELECTION_SEED + n_select - 1),
            "report": (REPORT_SEED, REPORT_SEED + n_report - 1)}
    spans = sorted(sets.items(), key=lambda kv: kv[1])
    for (a, (_, a_end)), (b, (b_start, _)) in zip(spans, spans[1:]):
        if b_start <= a_end:
            raise ValueError(f"the {a} and {b} seeds overlap ({sets[a]} and {sets[b]}): use fewer images")
    return sets


def select_weight(scores: dict[float, float]) -> float:
    """The w with the lowest score (FID); ties go to the smaller w."""
    finite = {w: s for w, s in scores.items() if math.isfinite(s)}
    if not finite:
        raise ValueError("no finite score in the sweep")
    return min(sorted(finite), key=finite.__getitem__)


@dataclass
class NeonPlan:
    """Everything that determines a Neon run; a resumed run must have the same plan."""
    checkpoint: str
    n_self: int = 6000
    self_sampler: str | None = None      # default: the checkpoint's
    self_steps: int | None = None
    self_guidance: float | None = None   # default: 2 for a class-conditional model, else 1
    self_precision: str | None = None    # "fp32" or "bf16" (autocast); default: the evaluator's precision
    self_sampler_options: dict[str, Any] = field(default_factory=dict)  # e.g. {"temperature": 0.7} for "decode"
    finetune_images: int | None = None   # default: 2% of the base's training images (Neon: 1-3%)
    batch_size: int | None = None        # default: the base's
    lr: float | None = None              # default: a tenth of the base's
    ema_half_life_kimg: float | None = None  # default: a tenth of the fine-tune
    weights: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 2.0)
    n_select: int = 2000
    eval_sampler: str | None = None      # the sweep's sampler (default: the checkpoint's)
    eval_steps: int | None = None
    eval_guidance: float | None = None
    half: bool = True                    # candidates and the result stored as float16, as the shipped models
    train_overrides: dict[str, Any] = field(default_factory=dict)


def _base_config(meta: dict[str, Any], checkpoint: str) -> dict[str, Any]:
    config = meta.get("training", {}).get("config")
    if not isinstance(config, dict):
        raise ValueError(f"{checkpoint} records no training config: Neon fine-tunes with the base's own objective "
                         f"and recipe, so it needs one (genstudio.json training.config)")
    return config


def resolve(plan: NeonPlan) -> NeonPlan:
    """The plan with every default filled in from the checkpoint."""
    from .api import Pipeline

    pipe = Pipeline.load(plan.checkpoint, device="cpu")
    cfg, d = _base_config(pipe.meta, plan.checkpoint), pipe.defaults()
    seen = int(pipe.meta.get("training", {}).get("images_seen") or 0)
    images = plan.finetune_images or max(1, round(0.02 * seen))
    if plan.self_precision not in (None, "fp32", "bf16"):
        raise ValueError(f"self_precision must be fp32 or bf16, got {plan.self_precision!r}")
    return NeonPlan(**{**asdict(plan), "weights": tuple(float(w) for w in plan.weights),
                       "self_sampler": plan.self_sampler or d["sampler"], "self_steps": plan.self_steps or d["steps"],
                       "self_guidance": plan.self_guidance if plan.self_guidance is not None
                       else (2.0 if pipe.num_classes else 1.0), "finetune_images": images,
                       "batch_size": plan.batch_size or cfg["train"]["batch_size"],
                       "lr": plan.lr or cfg["train"]["lr"] / 10,
                       "ema_half_life_kimg": plan.ema_half_life_kimg if plan.ema_half_life_kimg is not None
                       else images / 10 / 1000})


def make_self_set(plan: NeonPlan, folder: Path, device: str = "cpu", batch_size: int = 250) -> Path:
    """S: one PNG per seed, in a folder per class (labels i % classes) so the training data loader reads the labels
    back; images already there are kept (a killed run resumes)."""
    from .api import Pipeline

    pipe = Pipeline.load(plan.checkpoint, device=device)
    classes = pipe.num_classes
    names = [f"{i:03d}" for i in range(max(classes, 1))]
    for name in names:
        (folder / name).mkdir(parents=True, exist_ok=True)

    def file(i: int) -> Path:
        return folder / names[i % classes if classes else 0] / f"{SELF_SEED + i:08d}.png"

    todo = [i for i in range(plan.n_self) if not file(i).is_file()]
    bf16 = (plan.self_precision or "fp32") == "bf16"
    for start in range(0, len(todo), batch_size):
        chunk = todo[start:start + batch_size]
        with torch.autocast(pipe.device.type, dtype=torch.bfloat16) if bf16 else nullcontext():
            res = pipe.generate(len(chunk), sampler=plan.self_sampler, steps=plan.self_steps,
                                seed=[SELF_SEED + i for i in chunk], guidance=plan.self_guidance,
                                labels=[i % classes for i in chunk] if classes else None, batch_size=batch_size,
                                sampler_options=plan.self_sampler_options or None)
        for i, img in zip(chunk, res.images):
            save_png(img, file(i))  # atomic
    return folder


def finetune_config(plan: NeonPlan, data: Path, out: Path) -> dict[str, Any]:
    """The base's own training config, on S, from the base's weights, for plan.finetune_images images; an objective
    with a curriculum (ICT's N, ECT's stage) is held where the base stopped."""
    from .families.registry import objective_from_config

    meta = read_meta(plan.checkpoint)
    cfg = _base_config(meta, plan.checkpoint)
    steps = max(1, math.ceil(plan.finetune_images / plan.batch_size))  # type: ignore[operator]
    objective = cfg["objective"]
    options = objective.get("options") or {}
    done = meta.get("training", {}).get("steps")
    if done is not None:
        held = objective_from_config(objective["name"], options).continued(int(done), cfg["train"]["max_steps"])
        objective = {**objective, "options": {**options, **held}}
    cfg = {**cfg, "objective": objective,
           "data": {**cfg["data"], "source": str(data), "split": "train", "limit": 0, "cache_dir": ""},
           "train": {**cfg["train"], "output_dir": str(out), "init_from": str(plan.checkpoint), "max_steps": steps,
                     "batch_size": plan.batch_size, "lr": plan.lr, "warmup_steps": 0, "sample_every": 0,
                     "checkpoint_every": max(1, steps // 4), "ema_half_life_kimg": plan.ema_half_life_kimg,
                     "progress": False}}
    for key, value in plan.train_overrides.items():
        section, _, name = key.partition(".")
        if section not in cfg or not name:
            raise ConfigError(f"train override {key!r} must be SECTION.KEY with a section of the config")
        cfg[section] = {**cfg[section], name: value}
    return cfg


def _candidate(base_model, base_sd, tuned_sd, w: float, meta: dict[str, Any], folder: Path, half: bool,
               training: dict[str, Any]) -> Path:
    base_model.load_state_dict(merge(base_sd, tuned_sd, w))
    model = base_model.half() if half else base_model
    try:
        return export_model(model, folder, training=training, defaults=meta.get("defaults"))
    finally:
        base_model.float()


def neon(checkpoint: str | Path, out: str | Path, *, plan: NeonPlan | None = None,
         score: Callable[..., dict[str, Any]] | None = None, **evaluator: Any) -> dict[str, Any]:
    """Run (or resume) Neon on `checkpoint` in folder `out`; returns the record written on the result's card.
    `evaluator`: options of genstudio.evaluate for the sweep (extractor, reference, device, ...; S is sampled on its
    device too); `score(path, **cell)` replaces genstudio.evaluate."""
    from .evaluation.metrics import checkpoint_hash, evaluate
    from .train import run
    from .train.state import exported_step

    out = Path(out)
    plan = plan or NeonPlan(checkpoint=str(checkpoint))
    plan = resolve(replace(plan, self_precision=plan.self_precision or evaluator.get("precision") or "fp32"))
    seeds = seed_sets(plan.n_self, plan.n_select, 1)
    out.mkdir(parents=True, exist_ok=True)
    plan_file, plan_dict = out / "neon.json", json_ready(asdict(plan))
    if plan_file.is_file() and read_json_object(plan_file) != plan_dict:
        raise ValueError(f"{out} holds a Neon run with another plan ({plan_file}); use another --out")
    if not plan_file.is_file():
        write_json(plan_file, plan_dict)
    t0 = time.perf_counter()

    make_self_set(plan, out / "self", device=evaluator.get("device") or "cpu")
    cfg = finetune_config(plan, out / "self", out / "finetune")
    if exported_step(out / "finetune") != cfg["train"]["max_steps"]:  # else the fine-tune is done
        run(config_from_dict(cfg), resume=True)

    base_model, meta = load_model(plan.checkpoint, device="cpu")
    tuned_model, _ = load_model(out / "finetune" / "model", device="cpu")
    base_sd = {k: (v.float() if v.is_floating_point() else v).clone() for k, v in base_model.state_dict().items()}
    tuned_sd = {k: v.clone() for k, v in tuned_model.state_dict().items()}
    base_model.float()
    score = score or evaluate
    cell = {"sampler": plan.eval_sampler, "steps": plan.eval_steps, "guidance": plan.eval_guidance,
            "n": plan.n_select, "seed": SELECTION_SEED}
    sweep_file = out / "sweep.json"
    scores: dict[str, Any] = read_json_object(sweep_file) if sweep_file.is_file() else {}
    training = {**meta.get("training", {}), "neon": {"base": str(plan.checkpoint), "finetune_images": cfg["train"][
        "max_steps"] * plan.batch_size}}
    for w in plan.weights:
        key = f"{w:g}"
        if key in scores:
            continue
        folder = _candidate(base_model, base_sd, tuned_sd, w, meta, out / "candidates" / f"w_{key}", plan.half,
                            training)
        result = score(folder, **cell, **evaluator)
        scores[key] = {"w": w, "metrics": result["metrics"], "protocol": result["protocol"]}
        write_json(sweep_file, scores)
    fid = {float(k): v["metrics"]["fid"] for k, v in scores.items() if float(k) in plan.weights}
    best = select_weight(fid)
    record = {
        "method": "Neon (Alemohammad, Wang, Baraniuk, ICLR 2026): theta = (1 + w) theta_base - w theta_finetuned",
        "base": str(plan.checkpoint), "base_sha256": checkpoint_hash(plan.checkpoint), "w": best,
        "w_grid": list(plan.weights),
        "self_set": {"n": plan.n_self, "sampler": plan.self_sampler, "steps": plan.self_steps,
                     "guidance": plan.self_guidance, "sampler_options": plan.self_sampler_options,
                     "precision": plan.self_precision, "seeds": seeds["self"],
                     "labels": "i % num_classes" if base_model.num_classes else None},
        "finetune": {"images": cfg["train"]["max_steps"] * plan.batch_size, "steps": cfg["train"]["max_steps"],
                     "batch_size": plan.batch_size, "lr": plan.lr, "ema_half_life_kimg": plan.ema_half_life_kimg,
                     "base_images_seen": meta.get("training", {}).get("images_seen"),
                     "objective": cfg["objective"]["name"], "objective_options": cfg["objective"].get("options") or {}},
        "selection": {"seeds": seeds["selection"], "n": plan.n_select, "metric": "fid",
                      "scores": {f"{w:g}": fid[w] for w in sorted(fid)}},
        "report_seeds": "0 .. n-1 (the evaluator's default), disjoint from the selection and S seeds",
        "seconds": round(time.perf_counter() - t0, 1),
    }
    record = json_ready(record)
    with atomic_folder(out / "model") as tmp:
        shutil.copytree(out / "candidates" / f"w_{best:g}", tmp, dirs_exist_ok=True)
        base_card = Path(plan.checkpoint) / "metrics.json"
        if (Path(plan.checkpoint) / "samples.png").is_file():  # the base's grid, should the base be replaced later
            shutil.copyfile(Path(plan.checkpoint) / "samples.png", tmp / BASE_SAMPLES)
        base_scores = read_json_object(base_card).get("scores", []) if base_card.is_file() else []
        write_json(tmp / "metrics.json", {"training": {k: v for k, v in training.items() if k != "config"},
                                          "neon": record, "scores": [], "base_scores": base_scores})
    return record


def json_ready(value: Any) -> Any:
    """Tuples as lists, so a plan compares equal to the one read back from JSON."""
    if isinstance(value, dict):
        return {k: json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_ready(v) for v in value]
    return value


def ship(run: str | Path, dest: str | Path, scores: list[dict[str, Any]], recipe: str,
         weights_sha256: str | None = None, base_note: str | None = None) -> Path:
    """Assemble a Neon run's result (run/model) as a shipped checkpoint folder `dest`: its grid and sampling time
    (genstudio.publish), the `neon` record and the base's scores and grid kept on its card, `scores` (report-seed
    results of genstudio.evaluate) recorded, and the card's training note and recipe extended by `recipe`.
    `weights_sha256`: redraw fid_vs_nfe.png from the scores under that c10 classifier."""
    from .evaluation.metrics import checkpoint_hash
    from .evaluation.records import record_scores, redraw_plot
    from .publish import publish

    run, dest = Path(run), Path(dest)
    card_file = run / "model" / "metrics.json"
    made = read_json_object(card_file) if card_file.is_file() else {}
    if "neon" not in made:
        raise ValueError(f"{run / 'model'} is not the result of a Neon run (its card has no neon record)")
    if any(r["protocol"]["seeds"]["first"] < SELECTION_SEED + made["neon"]["selection"]["n"]
           and r["protocol"]["seeds"]["last"] >= SELECTION_SEED for r in scores):
        raise ValueError("a report score uses the selection seeds: report on seeds disjoint from them (0..n-1)")
    if dest.exists():
        shutil.rmtree(dest)
    publish(run, dest)  # the merged model, its samples.png and sampling time; neon() kept the base's grid
    card = read_json_object(dest / "metrics.json")
    neon_record = {**made["neon"], **({"base_note": base_note} if base_note else {})}
    card["neon"], card["base_scores"] = neon_record, made.get("base_scores", [])
    base_card = Path(neon_record["base"]) / "metrics.json"
    base_training = read_json_object(base_card).get("training", {}) if base_card.is_file() else {}
    note = (f"Then improved by Neon (w = {neon_record['w']:g}): {neon_record['finetune']['images']} images of "
            f"fine-tuning on its own samples, merged as theta = (1 + w) theta_base - w theta_finetuned.")
    card["training"].update(note=" ".join(filter(None, [base_training.get("note"), note])),
                            recipe="; then ".join(filter(None, [base_training.get("recipe"), recipe])))
    write_json(dest / "metrics.json", card)
    record_scores(dest, scores)
    if weights_sha256:
        redraw_plot(dest, weights_sha256=weights_sha256)
    if checkpoint_hash(dest) != checkpoint_hash(run / "model"):
        raise RuntimeError(f"{dest} does not hold the weights of {run / 'model'}")
    return dest
