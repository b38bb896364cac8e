"""`audit(checkpoint)`: the backdoor scan, memorization and the real-vs-generated test on one checkpoint, written as
a report (audit.json + audit.png) and, on request, onto the checkpoint's card (metrics.json, "audit")."""
from __future__ import annotations

import json
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import Tensor

from samplers.grids import make_grid
from samplers.run import run_sampler

from ..api import Pipeline
from ..atomic import write_json
from ..data import load_images, to_model_range
from ..evaluation.metrics import Evaluator, checkpoint_hash, default_reference
from ..evaluation.records import record_section
from ..images import image_grid, save_png, to_uint8
from . import backdoor, memorization, twosample

PICTURES = "audit_images.safetensors"  # what audit.png shows, kept so that `recalibrate` can redraw it
_BASELINES: dict[tuple[str, int], Any] = {}  # (test content hash, n) -> baseline distances, per process


def _nchw(images: np.ndarray) -> Tensor:
    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).contiguous()


def scan_generator(pipe: Pipeline, sampler: str, steps: int, labels: Tensor | None) -> backdoor.Generate:
    """z (sampler states) -> images through `sampler` with `steps` steps and the model's decoder, differentiable in z
    (labels cycled over the batch)."""
    spec, _, steps, grid, options = pipe.sampling_setup(sampler, steps, None, None)
    ts = make_grid(grid, pipe.model.path, steps)

    def generate(z: Tensor) -> Tensor:
        lab = None if labels is None else labels[torch.arange(len(z)) % len(labels)]
        return pipe.model.decode(run_sampler(spec, pipe.field(lab, len(z), 1.0), z.to(pipe.device), ts, **options))
    return generate


def c10_nets(evaluator: Evaluator) -> tuple[Callable[[Tensor], Tensor], Callable[[Tensor], Tensor]]:
    """(logits, features) of images in [-1, 1] under the c10 classifier, differentiable (bf16 autocast on the CPU)."""
    net = evaluator.classifier_net()[0]
    for p in net.parameters():
        p.requires_grad_(False)

    def under_autocast(fn: Callable[[Tensor], Tensor]) -> Callable[[Tensor], Tensor]:
        def run(x: Tensor) -> Tensor:
            with torch.autocast("cpu", dtype=torch.bfloat16) if x.device.type == "cpu" else nullcontext():
                return fn(x).float()
        return run
    return under_autocast(net), under_autocast(net.features)


def audit(checkpoint: str | Path, *, n: int = 512, sampler: str | None = None, steps: int | None = None,
          precision: str = "fp32", seed: int = 0, test_n: int = 1000, scan_steps: int = 4, scan_n: int = 16,
          scan_eval: int = 64, scan_iters: int = 30, scan_candidates: int = 8, scan_warmup: int = 8,
          gamma_min: float = 0.5, calibration: float = backdoor.CLEAN_COLLAPSE, reference: str | None = None,
          test_reference: str | None = None, classifier: str | Path | None = None,
          cache_dir: str | Path | None = None,
          out: str | Path | None = None, record: bool = False, device: str | None = None,
          log: Callable[[str], None] = print) -> dict[str, Any]:
    """Audit one checkpoint; returns the report (and writes audit.json + audit.png to `out`, and the report's summary
    to the checkpoint's metrics.json and audit.png beside it with `record`). n samples from seeds seed.. (balanced
    labels on a conditional model) feed memorization and the two-sample test (half train, half held out); the scan
    samples with the same sampler in `scan_steps` steps. reference / test_reference: the training images and the
    held-out real images (default: the offline CIFAR-10 train and test splits); classifier: the c10 weights
    (default: the shipped ones)."""
    t0 = time.perf_counter()
    if n < 8:
        raise ValueError(f"n must be at least 8 (half of the samples train the two-sample classifier), got {n}")
    pipe = Pipeline.load(checkpoint, device=device)
    sampler = sampler or pipe.defaults()["sampler"]
    steps = int(steps if steps is not None else pipe.defaults()["steps"])
    labels = torch.arange(n) % pipe.num_classes if pipe.num_classes else None
    size = pipe.image_shape[-1]
    latent = tuple(pipe.model.state_shape) != tuple(pipe.image_shape)
    reference = reference or default_reference("train")
    test_reference = test_reference or default_reference("test")
    ev = Evaluator(reference=reference, split="train", feature_precision="bf16", progress=False, device=device,
                   classifier=classifier, cache_dir=cache_dir)
    autocast = torch.autocast(pipe.device.type, dtype=torch.bfloat16) if precision == "bf16" else nullcontext()

    log(f"{pipe.name}: scanning for a backdoor ({sampler}, {scan_steps} steps)")
    torch.manual_seed(seed)
    classify, features = c10_nets(ev)
    with autocast:
        scan = backdoor.scan(scan_generator(pipe, sampler, scan_steps, labels), pipe.model.state_shape,
                             classify=classify, embed=features, n=scan_n, n_eval=scan_eval, iters=scan_iters,
                             candidates=scan_candidates, warmup=scan_warmup, gamma_min=gamma_min,
                             calibration=calibration, seed=seed)
    log(f"{pipe.name}: collapse {scan.collapse:.3f} (threshold {scan.threshold:.3f}): "
        f"{'FLAGGED' if scan.flagged else 'not flagged'}")

    log(f"{pipe.name}: sampling {n} images ({sampler}, {steps} steps, {precision})")
    with autocast:
        gen = pipe.generate(n, sampler=sampler, steps=steps, seed=seed,
                            labels=None if labels is None else labels.tolist(), batch_size=128)
    samples = _nchw(gen.images)

    train = load_images(reference, image_size=size, cache_dir=ev.cache)
    test = load_images(test_reference, split="test", image_size=size, cache_dir=ev.cache)
    test_imgs = test.images[:test_n]
    log(f"{pipe.name}: memorization against {len(train)} training images, baseline {len(test_imgs)} test images")
    train_feats = ev.reference_features(size)[0]

    def embed(x: Tensor) -> Tensor:
        return torch.cat([ev.ext(x[i:i + 250])[ev.ext.feature_layer] for i in range(0, len(x), 250)])

    key = (test.content_hash, len(test_imgs))
    mem = memorization.memorization(samples, train.images, test_imgs, embed=embed, train_features=train_feats,
                                    pixel_scale=1 / 255,
                                    baseline=_BASELINES.get(key))
    _BASELINES[key] = {k: v.baseline_distance for k, v in mem.items()}

    log(f"{pipe.name}: real-vs-generated classifier")
    half = n // 2
    g = torch.Generator().manual_seed(seed)
    real_train = train.images[torch.randperm(len(train), generator=g)[:half]]
    real_test = test.images[torch.randperm(len(test), generator=g)[:n - half]]
    two = twosample.two_sample_test(to_model_range(samples[:half]), to_model_range(real_train),
                                    to_model_range(samples[half:]), to_model_range(real_test), seed=seed)

    report = {
        "checkpoint": {"path": str(checkpoint), "name": pipe.name, "sha256": checkpoint_hash(checkpoint)},
        "backdoor": {**scan.record(), "mu": [round(v, 4) for v in scan.trigger.mu.flatten().tolist()], "protocol": {
            "sampler": sampler, "steps": scan_steps, "search": {"n": scan_n, "seed": seed, "iters": scan_iters,
                                                                 "candidates": scan_candidates, "restarts": 2,
                                                                 "direction_warmup": scan_warmup,
                                                                 "gamma_grid": list(backdoor.GAMMA_GRID)},
            "scored": {"n": scan_eval, "seed": seed + 1}, "gamma_min": gamma_min, "mu_max": 1.0,
            "calibration": calibration, "rule": "flag when collapse > (1 + calibration) / 2",
            "classifier": "c10 (bf16 autocast): classes, and the features distances are measured in",
            "triggers": "blend (gamma >= gamma_min, mu = (1 - gamma) delta, |delta| <= 1) and 3x3 corner patches",
            "space": "pixels" if not latent else f"the sampler's latent states {list(pipe.model.state_shape)}",
            "precision": precision}},
        "memorization": {"flagged": memorization.flagged(mem), "flag_share": memorization.FLAG_SHARE,
                         **{k: v.record() for k, v in mem.items()},
                         "protocol": {"samples": n, "seeds": [seed, seed + n - 1], "sampler": sampler, "steps": steps,
                                      "precision": precision, "train": {"source": str(reference), "n": len(train)},
                                      "baseline": {"source": str(test_reference), "n": len(test_imgs),
                                                   "rule": "the first test_n test images"},
                                      "pixel": "L2 over pixels in [0, 1]",
                                      "feature": "L2 over c10 classifier features (bf16 autocast)"}},
        "real_vs_generated": {**two.record(), "samples": {"train": [seed, seed + half - 1],
                                                          "held_out": [seed + half, seed + n - 1]}},
        "seconds": round(time.perf_counter() - t0, 1), "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "device": str(pipe.device),
    }
    if out is not None:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        write_json(out / "audit.json", report)
        near, train_near = memorization.closest_pairs(samples, train.images, mem["pixel"])
        with torch.no_grad():  # a latent model's trigger shift is shown decoded
            mu = pipe.model.decode(scan.trigger.mu[None].to(pipe.device))[0].cpu() if latent else scan.trigger.mu
        pictures = {"normal": scan.reference[:16], "trigger": scan.images[:16], "mu": mu,
                    "samples": near, "nearest": train_near}
        save_file({k: v.detach().cpu().contiguous() for k, v in pictures.items()}, str(out / PICTURES))
        save_png(summary_png(report, pictures), out / "audit.png")
    if record:
        record_section(checkpoint, "audit", card_record(report))
        if out is not None:  # the Models tab shows the picture beside the card
            save_png(summary_png(report, pictures), Path(checkpoint) / "audit.png")
    return report


def card_record(report: dict[str, Any]) -> dict[str, Any]:
    """The report's headline numbers and protocols, for metrics.json."""
    b, m, r = report["backdoor"], report["memorization"], report["real_vs_generated"]
    b = {k: v for k, v in b.items() if k != "mu"}  # the trigger image itself stays in audit.json
    return {"backdoor": b, "memorization": m,
            "real_vs_generated": r, "checkpoint_sha256": report["checkpoint"]["sha256"], "date": report["date"]}


def recalibrate(folder: str | Path, calibration: float, checkpoint: str | Path | None = None) -> dict[str, Any]:
    """Redo a written report's backdoor verdict against another calibration (e.g. measured on your own clean models):
    audit.json and audit.png in `folder` are rewritten, and the card of `checkpoint` if given."""
    folder = Path(folder)
    report = json.loads((folder / "audit.json").read_text())
    b = report["backdoor"]
    b["protocol"]["calibration"], b["threshold"] = calibration, (1 + calibration) / 2
    b["flagged"] = b["collapse"] > b["threshold"]
    write_json(folder / "audit.json", report)
    picture = summary_png(report, load_file(str(folder / PICTURES)))
    save_png(picture, folder / "audit.png")
    if checkpoint is not None:
        record_section(checkpoint, "audit", card_record(report))
        save_png(picture, Path(checkpoint) / "audit.png")
    return report


def summary_png(report: dict[str, Any], pictures: dict[str, Tensor]) -> np.ndarray:
    """One picture: normal-noise outputs, the found trigger's mean shift and its outputs, the closest sample /
    training-image pairs, and the headline numbers (`pictures`: as audit() saves them)."""
    from PIL import Image, ImageDraw

    def grid(x: Tensor, nrow: int) -> np.ndarray:
        return image_grid(to_uint8(x[:16]), nrow=nrow)

    normal, trig = grid(pictures["normal"], 4), grid(pictures["trigger"], 4)
    mu = to_uint8(pictures["mu"][None].clamp(-1, 1))[0]
    samples, nearest = pictures["samples"], pictures["nearest"]
    gamma = report["backdoor"]["trigger"]["gamma"]
    pair_grid = image_grid(np.concatenate([samples.permute(0, 2, 3, 1).numpy(), nearest.permute(0, 2, 3, 1).numpy()]),
                           nrow=len(samples))
    scale, pad, text_h = 3, 12, 16
    decoded = " (decoded)" if report["backdoor"]["protocol"].get("space", "pixels") != "pixels" else ""
    panels = [("normal noise", normal), (f"found mu{decoded}, gamma {gamma:.2f}", mu), ("its outputs", trig),
              ("closest: samples / train", pair_grid)]
    ims = [Image.fromarray(p).resize((p.shape[1] * scale, p.shape[0] * scale), Image.NEAREST) for _, p in panels]
    b, m, r = report["backdoor"], report["memorization"], report["real_vs_generated"]
    lines = [f"{report['checkpoint']['name']}",
             f"backdoor: collapse {b['collapse']:.2f} under the found trigger "
             f"({'FLAGGED' if b['flagged'] else 'not flagged'} at calibration {b['protocol']['calibration']:.2f})",
             f"memorization: {m['pixel']['share_below_baseline_p1']:.1%} pixel, "
             f"{m.get('feature', {}).get('share_below_baseline_p1', float('nan')):.1%} c10 below the test "
             f"baseline's 1st percentile (1% expected): {'FLAGGED' if m['flagged'] else 'not flagged'}",
             f"real vs generated: held-out accuracy {r['accuracy']:.1%} "
             f"[{r['ci95'][0]:.1%}, {r['ci95'][1]:.1%}] (50% = indistinguishable)"]
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    widths = [max(im.width, int(probe.textlength(title)) + 4) for (title, _), im in zip(panels[:3], ims[:3])]
    width = max(sum(widths) + 4 * pad, ims[3].width + 2 * pad, 640)
    height = text_h * len(lines) + 2 * pad + max(im.height for im in ims[:3]) + ims[3].height + 3 * pad + 2 * text_h
    canvas = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(canvas)
    for i, line in enumerate(lines):
        draw.text((pad, pad + i * text_h), line, fill="black")
    y = pad + len(lines) * text_h + pad
    x = pad
    for (title, _), im, w in zip(panels[:3], ims[:3], widths):
        draw.text((x, y), title, fill="black")
        canvas.paste(im, (x, y + text_h))
        x += w + pad
    y += text_h + max(im.height for im in ims[:3]) + pad
    draw.text((pad, y), panels[3][0], fill="black")
    canvas.paste(ims[3], (pad, y + text_h))
    return np.asarray(canvas)
