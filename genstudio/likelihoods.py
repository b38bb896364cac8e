"""Negative log-likelihood in bits/dim on held-out images, one registry entry per model kind, each number with its
protocol and whether it is exact or a bound:

- "nf" (a normalizing flow): exact, log p(x) = log N(f(x)) + log |det df/dx|;
- "vae": the negative ELBO, an upper bound on the NLL;
- "field" (score, diffusion, flow-matching models): the probability-flow ODE likelihood (Song et al. 2021, Sec. 4.3
  and App. D.2; samplers.likelihood), with Hutchinson's trace estimator (one Gaussian probe per image), solved by
  torchdiffeq's dopri5; a model that samples in a latent space turns the latents' ODE density into a bound on the
  images' (model.log_likelihood: the ELBO with the ODE model as the prior).

Images are 8-bit pixels p, in model range x = p / 127.5 - 1, dequantized uniformly (x + u / 127.5, u ~ U[0, 1));
bits/dim = (-log p(x) / D + log 127.5) / log 2 is then an upper bound on the discrete NLL, as papers report it
(Theis et al. 2016)."""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from torch import Tensor

from samplers.likelihood import bits_per_dim, dequantize, log_likelihood

from .core.noise import generators
from .data import load_images, to_model_range
from .model import Guided

TEST_SPLIT = "$GENSTUDIO_DATA/cifar10/test.tar.gz"
DEQUANTIZATION = "uniform: x + u / 127.5, u ~ U[0, 1) per pixel, x = p / 127.5 - 1 (Theis et al. 2016)"


@dataclass(frozen=True)
class LikelihoodSpec:
    kinds: tuple[str, ...]
    fn: Callable[..., tuple[Tensor, dict[str, Any]]]  # (model, images, generator, **options) -> (bits, protocol)
    paper: str


LIKELIHOODS: dict[str, LikelihoodSpec] = {}


def register_likelihood(*, kinds: Sequence[str], paper: str):
    """Decorator: how models of `kinds` compute bits/dim of a batch of images in model range."""
    def wrap(fn: Callable) -> Callable:
        for kind in kinds:
            if kind in LIKELIHOODS:
                raise ValueError(f"a likelihood is registered twice for kind {kind!r}")
            LIKELIHOODS[kind] = LikelihoodSpec(tuple(kinds), fn, paper)
        return fn
    return wrap


def get_likelihood(model) -> LikelihoodSpec:
    spec = LIKELIHOODS.get(model.kind)
    if spec is None:
        raise ValueError(f"no likelihood for a {model.kind!r} model (kinds with one: {', '.join(LIKELIHOODS)})")
    return spec


@register_likelihood(kinds=("nf", "vae"), paper="Dinh et al. 2017 (change of variables); Kingma & Welling 2014 (ELBO)")
def generator_bits(model, images: Tensor, generator, **_) -> tuple[Tensor, dict[str, Any]]:
    """The model's own: exact for a flow, the negative ELBO (one posterior sample per image) for a VAE."""
    exact = bool(model.exact)
    method = ("change of variables (exact)" if exact else
              "negative ELBO, one posterior sample per image (an upper bound on the NLL)")
    return model.nll_bits(images, generator), {"exact": exact, "method": method}


@register_likelihood(kinds=("field",), paper="Song et al. 2021, Sec. 4.3 and App. D.2 (probability-flow ODE)")
def ode_bits(model, images: Tensor, generator, rtol: float = 1e-5, atol: float = 1e-5,
             **_) -> tuple[Tensor, dict[str, Any]]:
    """The probability-flow ODE likelihood of the (dequantized) states, Hutchinson's trace with one Gaussian probe
    per image; for a latent model, the ELBO with it as the prior (model.log_likelihood)."""
    field = Guided(model)
    x = dequantize(images, generator)
    log_p, exact = model.log_likelihood(
        x, lambda s: log_likelihood(field, s, exact_trace=False, generator=generator, rtol=rtol, atol=atol),
        generator)
    method = (f"probability-flow ODE, torchdiffeq dopri5 (rtol {rtol:g}, atol {atol:g}), Hutchinson trace "
              f"(one Gaussian probe per image), t from {float(model.path.t_min):g} to {float(model.path.t_max):g}")
    if not exact:
        method += "; images by the ELBO with the latent ODE model as the prior (an upper bound on the NLL)"
    return bits_per_dim(log_p, images[0].numel()), {"exact": exact, "method": method, "nfe": field.nfe}


def likelihood(checkpoint: str | Path, *, n: int | None = None, source: str = TEST_SPLIT, batch_size: int = 100,
               seed: int = 0, device: str | None = None, cache_dir: str | None = None, record: bool = False,
               **options: Any) -> dict[str, Any]:
    """Bits/dim of `checkpoint` on the images of `source` (default: the CIFAR-10 test split), all of them or a fixed
    random subset of `n` (torch.randperm with `seed`); image i's dequantization noise (and Hutchinson probe) comes
    from seed + i. `options` go to the kind's likelihood (rtol, atol for the ODE). `record`: add the result to the
    checkpoint's metrics.json under "likelihood" (one record per protocol)."""
    from .api import Pipeline

    pipe = Pipeline.load(checkpoint, device=device or "cpu")
    spec = get_likelihood(pipe.model)
    data = load_images(source, image_size=pipe.image_shape[-1], cache_dir=cache_dir)
    total = len(data.images)
    index = torch.arange(total)
    if n is not None:
        if not 1 <= int(n) <= total:
            raise ValueError(f"n must be in 1..{total} (the images of {source}), got {n}")
        index = torch.randperm(total, generator=torch.Generator().manual_seed(seed))[:int(n)].sort().values
    if not int(batch_size) >= 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    t0, bits, protocol = time.perf_counter(), [], {}
    for start in range(0, len(index), int(batch_size)):
        idx = index[start:start + int(batch_size)]
        x = to_model_range(data.images[idx]).to(pipe.device)
        gens = generators([seed + int(i) for i in range(start, start + len(idx))])
        with torch.no_grad():  # the ODE's divergence enables gradients where it takes them
            b, protocol = spec.fn(pipe.model, x, gens, **options)
        bits.append(b.detach().double().cpu())
    values = torch.cat(bits)
    result = {
        "bits_per_dim": float(values.mean()),
        "standard_error": float(values.std() / math.sqrt(len(values))) if len(values) > 1 else None,
        "exact": protocol["exact"],
        "protocol": {"checkpoint": str(checkpoint), "source": source, "n": len(values), "of": total,
                     "subset": None if n is None else f"torch.randperm({total}, seed {seed})[:{len(values)}]",
                     "seed": seed, "dequantization": DEQUANTIZATION, "method": protocol["method"],
                     "paper": spec.paper, **{k: v for k, v in options.items()},
                     "device": str(pipe.device), "wall_seconds": round(time.perf_counter() - t0, 1)},
    }
    if record:
        record_likelihood(checkpoint, result)
    return result


def record_likelihood(folder: str | Path, result: dict[str, Any]) -> Path:
    """Add `result` to folder/metrics.json's "likelihood" list, replacing one with the same protocol."""
    import json

    from .atomic import write_json

    path = Path(folder) / "metrics.json"
    metrics = json.loads(path.read_text()) if path.is_file() else {}
    key = {k: v for k, v in result["protocol"].items() if k not in ("wall_seconds", "checkpoint", "device")}
    old = [r for r in metrics.get("likelihood", []) if isinstance(r, dict)
           and {k: v for k, v in r.get("protocol", {}).items() if k not in ("wall_seconds", "checkpoint", "device")}
           != key]
    metrics["likelihood"] = old + [result]
    write_json(path, metrics)
    return path
