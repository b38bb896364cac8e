"""The model wrapper (network + path + native prediction + preconditioning + conditioning), and
`Guided`, a model bound to labels and a guidance scale: the object every sampler drives."""
from __future__ import annotations

from typing import Any, Callable

import torch
from torch import Tensor, nn

from .core.paths import NoisePath, expand, path_from_config, path_to_config
from .core.precond import NoPrecond, precond_from_config, precond_to_config
from .core.predictions import check_prediction, convert, to_x0_eps


class Model(nn.Module):
    """A network trained to output `prediction` on `path`, optionally class-conditional.

    `num_classes = 0` is unconditional; otherwise label `num_classes` is the "no label" class
    that classifier-free guidance uses (Ho & Salimans 2022). `family` names the registered family
    (genstudio.families) that built it; `kind` says which samplers can drive it ("field": a prediction
    at (x, t); other kinds are declared by the families that make them).
    """

    def __init__(self, network: nn.Module, path: NoisePath, prediction: str, precond=None,
                 num_classes: int = 0, family: str | None = None, kind: str = "field"):
        super().__init__()
        precond = precond or NoPrecond()
        check_prediction(prediction)
        if precond.output is not None and precond.output != prediction:
            raise ValueError(f"{precond.name} preconditioning outputs {precond.output!r}, not {prediction!r}")
        self.network, self.path, self.prediction, self.precond = network, path, prediction, precond
        self.num_classes, self.family, self.kind = num_classes, family, kind

    @property
    def null_label(self) -> int:
        return self.num_classes

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return self.network.image_shape

    @property
    def state_shape(self) -> tuple[int, ...]:
        """The shape of one sampler state (the noise z a sampler starts from): the image's, unless the model
        samples in a latent space (then `decode` turns a final state into an image)."""
        return self.image_shape

    @property
    def output_shape(self) -> tuple[int, ...]:
        """The shape of one output of forward (a prediction in the state space, or an image for a generator)."""
        return self.state_shape

    def encode(self, images: Tensor) -> Tensor:
        """Images in model range -> sampler states (the identity in pixel space)."""
        return images

    def decode(self, states: Tensor) -> Tensor:
        """Sampler states -> images in model range (the identity in pixel space)."""
        return states

    def log_likelihood(self, images: Tensor, state_log_p: Callable[[Tensor], Tensor],
                       generator=None) -> tuple[Tensor, bool]:
        """(log p(images) in nats per image, exact?) given the log-density of sampler states: in pixel space the
        same thing, exactly; a latent model returns a lower bound (its ELBO with that density as the prior)."""
        return state_log_p(images), True

    def components(self) -> dict[str, nn.Module]:
        """The networks a checkpoint saves, by component name (genstudio.nets)."""
        return self.network.components()

    def forward(self, x: Tensor, t: Tensor | float, labels: Tensor | None = None) -> Tensor:
        """The native prediction at (x, t); t is a scalar or per-sample (B,).

        Times and scalings stay in x's precision; only the network runs in its own dtype, so a
        half-precision network never quantizes t (DDPM's t = 1..1000 would lose steps in bf16)."""
        t = expand(t, x)
        c_skip, c_out, c_in, c_noise = self.precond.scalings(self.path, t)
        if self.num_classes and labels is None:
            labels = torch.full((x.shape[0],), self.null_label, dtype=torch.long, device=x.device)
        net_dtype = next(self.network.parameters()).dtype
        out = self.network((c_in * x).to(net_dtype), c_noise, labels)
        return c_skip * x + c_out * out.to(x.dtype)

    def spec(self) -> dict[str, Any]:
        """What genstudio.json records about the model (the network's own config is saved with it)."""
        return {"family": self.family, "kind": self.kind, "path": path_to_config(self.path),
                "prediction": self.prediction, "precond": precond_to_config(self.precond),
                "num_classes": self.num_classes}

    @classmethod
    def from_spec(cls, spec: dict[str, Any], network: nn.Module) -> "Model":
        return cls(network, path_from_config(spec["path"]), spec["prediction"],
                   precond_from_config(spec.get("precond")), int(spec.get("num_classes", 0)),
                   spec.get("family"), spec.get("kind", "field"))


class OnPath(nn.Module):
    """A model seen on another path with the same log-SNRs: at time t' of the new path it answers the
    base model at t with lambda(t) = lambda'(t'), on x = x' alpha(t) / alpha'(t'). The x0 prediction is
    the same on both, so that is what this view outputs.

    Viewing a VP model on the EDM path (x' = x / alpha, t' = sigma / alpha) is how k-diffusion and
    diffusers' Euler/Heun schedulers integrate it (Karras et al. 2022, Sec. 3)."""

    def __init__(self, model: nn.Module, path: NoisePath):
        super().__init__()
        self.base, self.path, self.prediction = model, path, "x0"
        self.num_classes = getattr(model, "num_classes", 0)
        self.family, self.kind = getattr(model, "family", None), getattr(model, "kind", "field")

    @property
    def null_label(self) -> int:
        return self.num_classes

    def forward(self, x: Tensor, t: Tensor | float, labels: Tensor | None = None) -> Tensor:
        t_new = expand(t, x).double()
        t_base = self.base.path.t_from_logsnr(self.path.logsnr(t_new))
        scale = (self.base.path.alpha(t_base) / self.path.alpha(t_new)).to(x.dtype)
        t_base = t_base.to(x.dtype)
        x_base = scale * x
        native = self.base(x_base, t_base.flatten(), labels)
        return convert(native, self.base.prediction, "x0", self.base.path, x_base, t_base)


def on_edm_path(model: nn.Module) -> OnPath:
    """`model` on the EDM path, over the same range of noise levels sigma / alpha."""
    from .core.paths import EDMPath

    s_min, s_max = model.path.sigma_tilde_range()
    return OnPath(model, EDMPath(t_min=s_min, t_max=s_max))


class Guided:
    """A model bound to class labels and a classifier-free guidance scale w:
    D_w = D_uncond + w (D_cond - D_uncond)  (Ho & Salimans 2022, Eq. 6; w = 1 is plain conditional).

    Guidance is applied to the native prediction; every conversion is affine in the prediction
    for fixed x_t, so it is the same in any prediction space. `nfe` counts evaluations of the
    guided field; with guidance the conditional and unconditional passes share one network call
    on a doubled batch: the network runs once per evaluation and sees twice the images.

    `network_batch = k` runs the network on batches of exactly k images (the last one padded by repeating
    its first image), so that an image's output never depends on the batch it came in: batched kernels
    round differently at different batch sizes (measured: 1/255 in about 1 of 36,864 pixel values).
    """

    def __init__(self, model: nn.Module, labels: Tensor | None = None, guidance: float = 1.0,
                 network_batch: int | None = None):
        if labels is not None and not getattr(model, "num_classes", 0):
            raise ValueError("labels given to an unconditional model")
        if network_batch is not None and not (isinstance(network_batch, int) and network_batch >= 1):
            raise ValueError(f"network_batch must be a positive integer or None, got {network_batch!r}")
        self.model, self.labels, self.guidance = model, labels, float(guidance)
        self.network_batch = network_batch
        self.path: NoisePath = model.path
        self.prediction: str = model.prediction
        self.nfe = 0

    def __call__(self, x: Tensor, t: Tensor | float, **extra) -> Tensor:
        """One guided evaluation; `extra` keyword inputs (e.g. a CAF model's part and v0) pass through,
        tensors doubled along with x for the batched unconditional pass."""
        self.nfe += 1
        labels = self.labels
        if labels is None or self.guidance == 1.0:
            return self._model(x, t, labels, **extra)
        t = expand(t, x).flatten()
        null = torch.full_like(labels, self.model.null_label)
        extra = {k: torch.cat([v, v]) if isinstance(v, Tensor) else v for k, v in extra.items()}
        both = self._model(torch.cat([x, x]), torch.cat([t, t]), torch.cat([labels, null]), **extra)
        cond, uncond = both.chunk(2)
        return uncond + self.guidance * (cond - uncond)

    def _model(self, x: Tensor, t: Tensor | float, labels: Tensor | None, **extra) -> Tensor:
        k = self.network_batch
        if k is None:
            return self.model(x, t, labels, **extra)
        n = x.shape[0]
        t = expand(t, x).flatten()
        outs = []
        for s in range(0, n, k):
            part = [x[s:s + k], t[s:s + k], None if labels is None else labels[s:s + k],
                    {name: v[s:s + k] if isinstance(v, Tensor) else v for name, v in extra.items()}]
            m = part[0].shape[0]
            if m < k:  # pad to k by repeating the part's first image
                part[:3] = [None if v is None else torch.cat([v, v[:1].expand(k - m, *v.shape[1:])]) for v in part[:3]]
                part[3] = {name: torch.cat([v, v[:1].expand(k - m, *v.shape[1:])]) if isinstance(v, Tensor) else v
                           for name, v in part[3].items()}
            outs.append(self.model(part[0], part[1], part[2], **part[3])[:m])
        return torch.cat(outs)

    def predict(self, x: Tensor, t: Tensor | float, kind: str) -> Tensor:
        return convert(self(x, t), self.prediction, kind, self.path, x, t)

    def x0_eps(self, x: Tensor, t: Tensor | float) -> tuple[Tensor, Tensor]:
        """(x0, eps) from one evaluation."""
        return to_x0_eps(self(x, t), self.prediction, self.path, x, t)

    def x0(self, x, t): return self.predict(x, t, "x0")
    def eps(self, x, t): return self.predict(x, t, "eps")
    def velocity(self, x, t): return self.predict(x, t, "velocity")
    def score(self, x, t): return self.predict(x, t, "score")
