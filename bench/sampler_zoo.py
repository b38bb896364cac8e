"""Sampler benchmark: sampler x steps -> NFE, images/s and distance to a high-NFE reference, and the
overhead of our sampling loop over a raw loop of the same network calls.

    OMP_NUM_THREADS=1 python bench/sampler_zoo.py --toy --n 1000 --threads 1
    OMP_NUM_THREADS=1 python bench/sampler_zoo.py --samplers ddim,heun --steps 2,4 --n 4 --ref-steps 20 --threads 1
    python bench/sampler_zoo.py                     # the shipped default checkpoint, every default sampler
    python bench/sampler_zoo.py --checkpoint checkpoints/edm_tiny_cifar10 --out samplers.json

Two targets:

- a checkpoint (default: the one named in checkpoints/DEFAULT). Every (sampler, steps) runs
  `pipe.generate(n, sampler, steps, seed, labels)` on the sampler's default grid; a conditional model
  gets labels i % num_classes. Distance: the mean over images of the per-image RMSE in [0, 1] against
  a reference run of the same seeds and labels (`--ref-sampler heun --ref-steps 100`), which for a
  deterministic sampler is the error of solving the same probability-flow ODE. For a stochastic
  sampler the images are other samples of the same distribution, so a pixel RMSE to the reference
  means nothing and the table says "n/a". A distributional distance on CIFAR (FID with the offline
  Inception extractor) comes once the evaluator (issue 6) exists; this script does not compute it.
- `--toy`: the exact denoiser of a 2-D Gaussian mixture (genstudio/core/toys.py; weights 0.3 / 0.7,
  means (-1, 0) and (1, 0.5), diagonal variances (0.04, 0.09) and (0.09, 0.04), the mixture of
  tests/samplers/test_stochastic_samplers.py) on the EDM path, started from N(0, sigma(t_max)^2) as the
  pipeline starts. Every sampler gets distributional distances to the true mixture: the sliced
  Wasserstein-2 distance to 100k exact samples (64 fixed directions), the error of the mean (L2),
  the relative error of the covariance (Frobenius) and the error of the mixture weights (each sample
  assigned to its most likely component). Deterministic samplers also get ref_rmse: the RMS distance,
  per sample, to the reference run from the same noise. The "exact" row scores n exact mixture
  samples: the floor that sampling noise alone puts under every distributional column.

Columns: nfe is the run's own count (the guided model's evaluations per batch, `Guided.nfe`),
spec_nfe what the registry promises (`spec.nfe(steps)`; n/a for adaptive solvers), calls the
forward calls the network (toy: the denoiser) actually received per batch, counted by a hook. A
mismatch between the three is reported below the table. img/s is n over the wall time of the call
(`SampleResult.seconds` for a checkpoint: noise, sampling and the uint8 conversion).

Overhead (checkpoint only): `pipe.generate(n, "euler", N)` against a hand-written loop that calls
the bare network `pipe.model.network(c_in * x, c_noise, labels)` N times on the same batch, same
times, same scalings (precomputed), under torch.no_grad, with the Euler update written out as
x <- P_i x + Q_i F; the noise is drawn before its timer. "sampler" times `spec.fn` on a `Guided`
model directly, splitting the overhead of the sampler and model wrappers from the pipeline's
(noise per seed, uint8 conversion). Each is the best of --repeats (5) interleaved runs after a warm-up.
The raw loop's images are checked against the pipeline's (max uint8 difference). Target: under 5%.

Runs on the GPU when CUDA is available, else on the CPU. Timings share the machine with whatever
else runs on it: for stable numbers run it on an otherwise idle machine.
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(1, str(Path(__file__).resolve().parent.parent))  # the repository root, for tests.gaussian

import argparse  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import time  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
from common import format_table, synchronize  # noqa: E402  (bench/common.py)

import samplers  # noqa: E402
from genstudio.atomic import write_text  # noqa: E402
from genstudio.core.noise import generators, randn_like  # noqa: E402
from genstudio.core.paths import EDMPath, expand  # noqa: E402
from genstudio.core.predictions import convert  # noqa: E402
from genstudio.core.toys import GaussianMixtureDenoiser  # noqa: E402
from genstudio.images import to_uint8  # noqa: E402
from genstudio.model import Guided  # noqa: E402
from samplers.grids import make_grid  # noqa: E402

DEFAULT_SAMPLERS = "ddim,euler,heun,dpmpp_2m,dpmpp_3m,unipc,euler_ancestral,dpmpp_2m_sde,rk4"
BATCH = 256  # pipe.generate's batch size
COLUMNS = ("sampler", "steps", "grid", "stoch", "nfe", "spec_nfe", "calls", "img_s")
CIFAR_COLUMNS = COLUMNS + ("rmse_ref",)
TOY_COLUMNS = COLUMNS + ("ref_rmse", "sw2", "mean_err", "cov_rel_err", "w_err")
OVERHEAD_COLUMNS = ("steps", "batch", "raw_s", "sampler_s", "generate_s", "sampler_ovh_%", "generate_ovh_%",
                    "max_uint8_diff")

f64 = dict(dtype=torch.float64)
MIX_MEANS = torch.tensor([[-1.0, 0.0], [1.0, 0.5]], **f64)
MIX_VARS = torch.tensor([[0.04, 0.09], [0.09, 0.04]], **f64)
MIX_W = torch.tensor([0.3, 0.7], **f64)
SW_DIRECTIONS = 64
SW_REFERENCE = 100_000


class CallCounter:
    """Counts forward calls of a module through a forward pre-hook, while inside the `with`."""

    def __init__(self, module: torch.nn.Module):
        self.module, self.calls, self.handle = module, 0, None

    def __enter__(self) -> "CallCounter":
        self.calls = 0
        self.handle = self.module.register_forward_pre_hook(self._hook)
        return self

    def _hook(self, module, args) -> None:
        self.calls += 1

    def __exit__(self, *exc) -> None:
        self.handle.remove()


def row_base(name: str, steps: int, grid: str, nfe: int, calls: int, seconds: float, n: int) -> dict[str, Any]:
    spec = samplers.get(name)
    return {"sampler": name, "steps": steps, "grid": grid, "stoch": "yes" if spec.stochastic else "no",
            "nfe": nfe, "spec_nfe": spec.nfe(steps), "calls": calls, "img_s": n / max(seconds, 1e-12),
            "seconds": seconds}


# -- the toy: an exact 2-D Gaussian mixture on the EDM path ----------------------------------------------

def mixture_samples(n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    k = torch.multinomial(MIX_W, n, replacement=True, generator=g)
    return MIX_MEANS[k] + MIX_VARS[k].sqrt() * torch.randn(n, 2, generator=g, **f64)


def mixture_moments() -> tuple[torch.Tensor, torch.Tensor]:
    mean = (MIX_W[:, None] * MIX_MEANS).sum(0)
    second = sum(w * (torch.diag(v) + torch.outer(m, m)) for w, m, v in zip(MIX_W, MIX_MEANS, MIX_VARS))
    return mean, second - torch.outer(mean, mean)


def component_of(x: torch.Tensor) -> torch.Tensor:
    """Index of the most likely mixture component of each sample."""
    diff = x[:, None] - MIX_MEANS[None]
    logp = -0.5 * (diff**2 / MIX_VARS[None] + MIX_VARS[None].log()).sum(-1) + MIX_W.log()[None]
    return logp.argmax(1)


class ToyMetrics:
    """Distributional distances of a sample set to the true mixture."""

    def __init__(self, seed: int):
        angles = torch.arange(SW_DIRECTIONS, **f64) * math.pi / SW_DIRECTIONS
        self.dirs = torch.stack([angles.cos(), angles.sin()], 1)  # (2, D) after .T
        self.ref_proj = (mixture_samples(SW_REFERENCE, seed + 10_000) @ self.dirs.T).sort(0).values
        self.mean, self.cov = mixture_moments()

    def __call__(self, x: torch.Tensor) -> dict[str, float]:
        x = x.double().cpu()
        if not torch.isfinite(x).all():
            return {"sw2": math.inf, "mean_err": math.inf, "cov_rel_err": math.inf, "w_err": math.inf}
        n = x.shape[0]
        proj = (x @ self.dirs.T).sort(0).values
        idx = ((torch.arange(n, **f64) + 0.5) / n * SW_REFERENCE).long().clamp(max=SW_REFERENCE - 1)
        sw2 = float(((proj - self.ref_proj[idx]) ** 2).mean().sqrt())
        frac = torch.bincount(component_of(x), minlength=len(MIX_W)).double() / n
        return {"sw2": sw2, "mean_err": float((x.mean(0) - self.mean).norm()),
                "cov_rel_err": float((torch.cov(x.T) - self.cov).norm() / self.cov.norm()),
                "w_err": float((frac - MIX_W).abs().max())}


def run_toy_sampler(name: str, steps: int, x_init: torch.Tensor, denoiser, seed: int):
    """(output, nfe, calls, seconds, grid) of one sampler run on the toy."""
    spec = samplers.get(name, denoiser)
    grid = samplers.default_grid(spec, denoiser.path)
    ts = make_grid(grid, denoiser.path, steps)
    x = x_init * denoiser.path.sigma(ts[0])
    field = Guided(denoiser)
    with CallCounter(denoiser) as counter:
        start = time.perf_counter()
        out = spec.fn(field, x, ts, generator=torch.Generator().manual_seed(seed + 1))
        seconds = time.perf_counter() - start
    return out, field.nfe, counter.calls, seconds, grid


def bench_toy(args: argparse.Namespace) -> dict[str, Any]:
    denoiser = GaussianMixtureDenoiser(EDMPath(), MIX_MEANS, MIX_VARS, MIX_W)
    metrics = ToyMetrics(args.seed)
    x_init = torch.randn(args.n, 2, generator=torch.Generator().manual_seed(args.seed), **f64)
    ref, ref_nfe, ref_calls, ref_s, ref_grid = run_toy_sampler(args.ref_sampler, args.ref_steps, x_init, denoiser,
                                                               args.seed)
    rows = [{"sampler": "exact", "steps": "-", "grid": "-", "stoch": "-", "nfe": None, "spec_nfe": None,
             "calls": None, "img_s": None, "ref_rmse": None, **metrics(mixture_samples(args.n, args.seed + 1))}]
    ref_row = row_base(args.ref_sampler, args.ref_steps, ref_grid, ref_nfe, ref_calls, ref_s, args.n)
    rows.append({**ref_row, "sampler": args.ref_sampler + "(ref)", "ref_rmse": 0.0, **metrics(ref)})
    for name in args.samplers:
        spec = samplers.get(name, denoiser)
        for steps in args.steps:
            out, nfe, calls, seconds, grid = run_toy_sampler(name, steps, x_init, denoiser, args.seed)
            ref_rmse = None if spec.stochastic else float(((out - ref) ** 2).sum(1).mean().sqrt())
            rows.append({**row_base(name, steps, grid, nfe, calls, seconds, args.n), "ref_rmse": ref_rmse,
                         **metrics(out)})
            print(f"done: {name} {steps}", file=sys.stderr, flush=True)
    return {"target": "toy", "rows": rows, "columns": TOY_COLUMNS,
            "reference": {"sampler": args.ref_sampler, "steps": args.ref_steps, "nfe": ref_nfe}}


# -- a checkpoint -------------------------------------------------------------------------------------------

def as_unit(images: np.ndarray) -> np.ndarray:
    return images.astype(np.float64) / 255.0


def labels_for(pipe, n: int) -> list[int] | None:
    return [i % pipe.num_classes for i in range(n)] if pipe.num_classes else None


def generate(pipe, args, name: str, steps: int, n: int, counter: CallCounter | None = None):
    labels = labels_for(pipe, n)
    kwargs = dict(sampler=name, steps=steps, seed=args.seed, labels=labels, guidance=args.guidance, batch_size=BATCH)
    if counter is None:
        return pipe.generate(n, **kwargs), None
    with counter:
        result = pipe.generate(n, **kwargs)
    return result, counter.calls // math.ceil(n / BATCH)


def bench_checkpoint(args: argparse.Namespace, pipe) -> dict[str, Any]:
    usable = set(pipe.samplers())
    if bad := [s for s in args.samplers if s not in usable]:
        raise SystemExit(f"{pipe.name} cannot be driven by {', '.join(bad)}; "
                         f"samplers that can: {', '.join(sorted(usable))}")
    counter = CallCounter(pipe.model.network) if hasattr(pipe.model, "network") else None
    generate(pipe, args, "euler", 1, args.n)  # warm-up (kernels, allocator), untimed
    ref, ref_calls = generate(pipe, args, args.ref_sampler, args.ref_steps, args.n, counter)
    ref_images = as_unit(ref.images)
    rows = []
    for name in args.samplers:
        spec = samplers.get(name, pipe.model)
        for steps in args.steps:
            result, calls = generate(pipe, args, name, steps, args.n, counter)
            rmse = None
            if not spec.stochastic:
                per_image = np.sqrt(((as_unit(result.images) - ref_images) ** 2).reshape(args.n, -1).mean(1))
                rmse = float(per_image.mean())
            rows.append({**row_base(name, steps, result.grid, result.nfe, calls, result.seconds, args.n),
                         "rmse_ref": rmse})
            print(f"done: {name} {steps}", file=sys.stderr, flush=True)
    return {"target": pipe.name, "rows": rows, "columns": CIFAR_COLUMNS,
            "reference": {"sampler": args.ref_sampler, "steps": args.ref_steps, "nfe": ref.nfe,
                          "seconds": ref.seconds, "grid": ref.grid}}


def raw_euler_setup(pipe, args, steps: int, n: int):
    """The noise, labels and per-step constants of a hand-written Euler loop on the bare network."""
    model, device = pipe.model, pipe.device
    path = model.path
    ts = make_grid(pipe.grid_for("euler"), path, steps)
    seeds = [args.seed + i for i in range(n)]
    x = randn_like(torch.empty((n, *pipe.image_shape)), generators(seeds)).double() * path.sigma(ts[0])
    x = x.float().to(device)
    labels = labels_for(pipe, n)
    labels = None if labels is None else torch.tensor(labels, dtype=torch.long, device=device)
    guided = labels is not None and args.guidance != 1.0
    if model.num_classes and labels is None:
        labels = torch.full((n,), model.null_label, dtype=torch.long, device=device)
    if guided:
        labels = torch.cat([labels, torch.full_like(labels, model.null_label)])
    ts32 = ts.to(device=device, dtype=x.dtype)
    one = torch.ones(1, 1, 1, 1, dtype=x.dtype, device=device)
    consts = []
    for i in range(steps):
        t, h = ts32[i], ts32[i + 1] - ts32[i]
        c_skip, c_out, c_in, c_noise = model.precond.scalings(path, expand(t, x))
        if guided:
            c_noise = torch.cat([c_noise, c_noise])
        # velocity = a x + b D for the native prediction D: the conversion is affine in (x, D)
        b = convert(one, model.prediction, "velocity", path, 0 * one, t).reshape(())
        a = convert(0 * one, model.prediction, "velocity", path, one, t).reshape(())
        consts.append((c_in, c_noise, 1 + h * (a + b * c_skip), h * b * c_out))
    net_dtype = next(model.network.parameters()).dtype
    return x, labels, consts, guided, net_dtype


@torch.no_grad()
def raw_euler(net, x, labels, consts, guided: bool, guidance: float, net_dtype) -> torch.Tensor:
    for c_in, c_noise, p, q in consts:
        xin = torch.cat([x, x]) if guided else x
        f = net((c_in * xin).to(net_dtype), c_noise, labels).to(x.dtype)
        if guided:
            cond, uncond = f.chunk(2)
            f = uncond + guidance * (cond - uncond)
        x = p * x + q * f
    return x


@torch.no_grad()
def bench_overhead(args: argparse.Namespace, pipe) -> dict[str, Any] | str:
    model = pipe.model
    if not (hasattr(model, "network") and hasattr(model, "precond")):
        return f"skipped: {type(model).__name__} has no bare network with preconditioning to call"
    steps, n, device = args.overhead_steps, min(args.n, BATCH), pipe.device
    x, labels, consts, guided, net_dtype = raw_euler_setup(pipe, args, steps, n)
    spec = samplers.get("euler", model)
    ts = make_grid(pipe.grid_for("euler"), model.path, steps)
    guided_labels = None if pipe.num_classes == 0 else torch.tensor(labels_for(pipe, n), device=device)

    def time_raw() -> tuple[float, torch.Tensor]:
        synchronize(device)
        start = time.perf_counter()
        out = raw_euler(model.network, x, labels, consts, guided, args.guidance, net_dtype)
        synchronize(device)
        return time.perf_counter() - start, out

    def time_sampler() -> float:
        synchronize(device)
        start = time.perf_counter()
        spec.fn(Guided(model, guided_labels, args.guidance), x, ts)
        synchronize(device)
        return time.perf_counter() - start

    def time_generate() -> tuple[float, np.ndarray]:
        synchronize(device)
        start = time.perf_counter()
        result = generate(pipe, args, "euler", steps, n)[0]
        return time.perf_counter() - start, result.images

    time_raw(), time_sampler(), time_generate()  # warm-up
    raw, samp, gen = [], [], []
    for _ in range(args.repeats):
        seconds, raw_out = time_raw()
        raw.append(seconds)
        samp.append(time_sampler())
        seconds, images = time_generate()
        gen.append(seconds)
    diff = int(np.abs(to_uint8(raw_out).astype(int) - images.astype(int)).max())
    raw_s, samp_s, gen_s = min(raw), min(samp), min(gen)
    return {"steps": steps, "batch": n, "raw_s": raw_s, "sampler_s": samp_s, "generate_s": gen_s,
            "sampler_ovh_%": 100 * (samp_s / raw_s - 1), "generate_ovh_%": 100 * (gen_s / raw_s - 1),
            "max_uint8_diff": diff, "all_raw_s": raw, "all_sampler_s": samp, "all_generate_s": gen}


# -- output -------------------------------------------------------------------------------------------------

def nfe_mismatches(rows: list[dict[str, Any]]) -> list[str]:
    bad = []
    for r in rows:
        if r.get("nfe") is None:
            continue
        counts = {"nfe": r["nfe"], "calls": r.get("calls")}
        if r.get("spec_nfe") is not None:
            counts["spec_nfe"] = r["spec_nfe"]
        if r.get("calls") is None:
            counts.pop("calls")
        if len(set(counts.values())) > 1:
            bad.append(f"{r['sampler']} {r['steps']} steps: " + ", ".join(f"{k}={v}" for k, v in counts.items()))
    return bad


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", type=Path, default=None,
                        help="checkpoint folder (default: the shipped default, checkpoints/DEFAULT)")
    parser.add_argument("--toy", action="store_true", help="the exact 2-D Gaussian-mixture denoiser instead")
    parser.add_argument("--samplers", default=DEFAULT_SAMPLERS, help="comma-separated sampler names")
    parser.add_argument("--steps", default="5,10,20", help="comma-separated step counts")
    parser.add_argument("--n", type=int, default=None, help="images per run (default: 16, toy: 4000)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--guidance", type=float, default=1.0, help="classifier-free guidance (conditional models)")
    parser.add_argument("--ref-sampler", default="heun", help="the high-NFE reference's sampler (deterministic)")
    parser.add_argument("--ref-steps", type=int, default=100, help="the high-NFE reference's steps")
    parser.add_argument("--overhead-steps", type=int, default=20, help="Euler steps of the overhead measurement")
    parser.add_argument("--repeats", type=int, default=5, help="timed repeats of the overhead measurement (best)")
    parser.add_argument("--no-overhead", action="store_true", help="skip the overhead measurement")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--out", type=Path, default=None, help="also write the results here as JSON")
    args = parser.parse_args(argv)
    args.samplers = [s for s in args.samplers.split(",") if s]
    if unknown := [s for s in args.samplers + [args.ref_sampler] if s not in samplers.SAMPLERS]:
        parser.error(f"unknown sampler(s) {unknown}; known: {', '.join(samplers.SAMPLERS)}")
    if samplers.get(args.ref_sampler).stochastic:
        parser.error(f"--ref-sampler must be deterministic; {args.ref_sampler} is stochastic")
    try:
        args.steps = [int(s) for s in args.steps.split(",") if s]
    except ValueError:
        parser.error(f"--steps must be comma-separated integers, got {args.steps!r}")
    if not args.steps or min(args.steps) < 1 or args.ref_steps < 1 or args.overhead_steps < 1 or args.repeats < 1:
        parser.error("--steps, --ref-steps, --overhead-steps and --repeats must be at least 1")
    if args.toy and args.checkpoint:
        parser.error("--toy and --checkpoint exclude each other")
    args.n = args.n or (4000 if args.toy else 16)
    if args.n < 2:
        parser.error("--n must be at least 2")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    overhead = None
    if args.toy:
        device = torch.device("cpu")
        report = bench_toy(args)
    else:
        import genstudio
        from genstudio.api import default_checkpoint

        pipe = genstudio.load(args.checkpoint or default_checkpoint())
        device = pipe.device
        report = bench_checkpoint(args, pipe)
        if not args.no_overhead:
            overhead = bench_overhead(args, pipe)
    ref = report["reference"]
    print(f"{report['target']}: device {device}, {torch.get_num_threads()} threads, n {args.n}, seed {args.seed}"
          + (f", guidance {args.guidance}" if not args.toy else "")
          + f"; reference {ref['sampler']} {ref['steps']} steps ({ref['nfe']} NFE)")
    print(format_table(report["rows"], report["columns"]))
    if args.toy:
        print("ref_rmse: RMS distance per sample to the reference from the same noise (deterministic samplers; "
              "n/a for stochastic ones). sw2, mean_err, cov_rel_err, w_err: against the true mixture; the "
              "'exact' row is the floor that n samples put under them.")
    else:
        print("rmse_ref: mean per-image RMSE in [0, 1] against the reference images (same seeds and labels). "
              "n/a for stochastic samplers: their images are other samples, so a pixel distance means nothing. "
              "FID with the offline extractor comes once the evaluator (issue 6) exists.")
    for line in nfe_mismatches(report["rows"]):
        print(f"NFE MISMATCH: {line}")
    if isinstance(overhead, dict):
        print(f"\noverhead of our loop over a raw loop of the same {overhead['steps']} network calls "
              f"(euler, batch {overhead['batch']}, best of {args.repeats}; target < 5%):")
        print(format_table([overhead], OVERHEAD_COLUMNS))
    elif overhead:
        print(f"\noverhead: {overhead}")
    if args.out:
        out = {"target": report["target"], "device": str(device), "threads": torch.get_num_threads(), "n": args.n,
               "seed": args.seed, "guidance": args.guidance, "steps": args.steps, "samplers": args.samplers,
               "reference": ref, "torch": torch.__version__, "results": report["rows"], "overhead": overhead,
               "nfe_mismatches": nfe_mismatches(report["rows"])}
        write_text(args.out, json.dumps(out, indent=1, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
