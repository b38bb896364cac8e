"""SIGN-style idempotent distillation: an idempotent network f distilled from a frozen diffusion or flow teacher
without an adversary. Built from the abstract of Zaman, Liu & Chiu 2025 ("Score-based Idempotent Distillation of
Diffusion Models", arXiv 2509.21470), whose full method is not public, and the losses of Shocher et al. 2024
(Idempotent Generative Network, IGN, Sec. 3): this is *not* the paper's exact method.

f(x) is genstudio.families.onestep's OneStepModel (the x0 prediction at t_max), kind "idempotent". The losses
implemented, per sample and averaged over pixels, x data, z standard normal noise, sg the stop-gradient:

    reconstruction  (IGN Eq. 5)   || f(x) - x ||^2                                  f is the identity on the data
    idempotence     (IGN Eq. 6)   || f_sg(f(z)) - f(z) ||^2                         f(z) moves to where f is identity;
                                                                                    the outer f's weights frozen
    matching (replaces IGN's tightness, Eq. 7)
                    1/2 || y - sg(y - g) ||^2,  y = f(z),  g = (x0_fake - x0_teacher)(x_t, t) / mean |y - x0_teacher|
                    x_t = alpha(t) y + sigma(t) n, t uniform on [t_lo, t_hi] of the path's range
    fake score (its own group)    the teacher's regression loss on sg(f(z)) for a field model x0_fake

Why these. IGN's tightness term pushes f away from being the identity everywhere by an adversarial distance between
f(f'(z)) and f'(z); SIGN's abstract replaces the adversary by the teacher's score. The matching term is the
distribution-matching gradient of KL(p_f,t || p_data,t) (DMD, Yin et al. 2024, Eq. 7 and their normalised weight):
per unit x_t its gradient is alpha (s_fake - s_teacher), which in x0 terms is proportional to x0_fake - x0_teacher.
It needs the score of f's own samples, so a fake-score network (a copy of the teacher, via OneStepModel.field after
train.init_from = the teacher) is trained on them with the teacher's loss, as a second optimizer group. Without it
(plain score distillation, fake = 0) f would collapse toward the teacher's modes. Reconstruction and idempotence
keep f a projector, so f(corrupted image) is an edit (the "project" editor) and re-applying f refines a sample
("reapply"); re-noise-and-apply is the "consistency" sampler.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, ClassVar

import torch
from torch import Tensor, nn

from genstudio.core.predictions import target
from genstudio.model import Guided
from genstudio.objective import Batch, Objective, OptimizerGroup, mean_per_sample

from . import onestep
from .registry import Family, register_family


@dataclass(frozen=True)
class SIGNLoss(Objective):
    """The SIGN-style losses (this module's docstring): {"model": reconstruction + idempotence + matching,
    "fake_score": ...} per sample. `teacher` is an exported field model's folder (frozen_modules loads it);
    `guidance` its classifier-free guidance scale in the matching term."""

    name: ClassVar[str] = "sign"
    teacher: str = ""
    reconstruction_weight: float = 1.0
    idempotence_weight: float = 1.0
    matching_weight: float = 1.0
    t_lo: float = 0.02   # the matching term's times, as fractions of the path's range (DMD's [0.02, 0.98] T)
    t_hi: float = 0.98
    guidance: float = 1.0
    fake_lr_scale: float = 1.0

    def __post_init__(self):
        if not 0 <= self.t_lo < self.t_hi <= 1:
            raise ValueError(f"need 0 <= t_lo < t_hi <= 1, got t_lo = {self.t_lo}, t_hi = {self.t_hi}")
        for k in ("reconstruction_weight", "idempotence_weight", "matching_weight", "guidance", "fake_lr_scale"):
            if not getattr(self, k) >= 0:
                raise ValueError(f"{k} must be >= 0, got {getattr(self, k)}")

    def extra_modules(self, model, data_shape: tuple[int, ...]) -> dict[str, nn.Module]:
        """The fake-score network: a field model on a copy of f's starting network (the teacher's, after init_from)."""
        return {"fake_score": model.field()}

    def frozen_modules(self, load: Callable[[str], nn.Module]) -> dict[str, nn.Module]:
        if not self.teacher:
            raise ValueError("sign distills a teacher: set objective.options.teacher to an exported field model's "
                             "folder (e.g. checkpoints/flow_small_cifar10)")
        return {"teacher": load(self.teacher).requires_grad_(False).eval()}

    def optimizer_groups(self, model: nn.Module, extra: dict[str, nn.Module]) -> list[OptimizerGroup]:
        return [OptimizerGroup("model", list(model.parameters())),
                OptimizerGroup("fake_score", list(extra["fake_score"].parameters()), self.fake_lr_scale)]

    def loss(self, model, batch: Batch, *, step: int | None = None, total_steps: int | None = None,
             extra: dict[str, nn.Module] | None = None) -> dict[str, Tensor]:
        extra = extra or {}
        missing = {"teacher", "fake_score"} - set(extra)
        if missing:
            raise ValueError(f"sign needs the modules {sorted(missing)}: pass extra={{**objective.extra_modules(...), "
                             f"**objective.frozen_modules(load)}}")
        x0, labels, teacher, fake_score = batch.x0, batch.labels, extra["teacher"], extra["fake_score"]
        path = model.path
        z = torch.randn_like(x0) * float(path.sigma(torch.tensor(float(path.t_max), dtype=torch.float64)))
        y = model(z, None, labels)
        rec = mean_per_sample((model(x0, None, labels) - x0) ** 2)
        value, grad = onestep.input_gradient(lambda u: mean_per_sample((model(u, None, labels) - u) ** 2), y)
        idem = onestep.with_gradient(y, value, grad)

        lo, hi = float(path.t_min), float(path.t_max)
        u = torch.rand(x0.shape[0], device=x0.device, dtype=torch.float64) * (self.t_hi - self.t_lo) + self.t_lo
        t = (lo + (hi - lo) * u).to(x0.dtype)
        x_t, _ = onestep.noised(path, y.detach(), t)
        with torch.no_grad():
            real = Guided(teacher, labels if getattr(teacher, "num_classes", 0) else None, self.guidance).x0(x_t, t)
            fake = onestep.predict(fake_score, x_t, t, labels, "x0")
            g = (fake - real) / (y.detach() - real).abs().flatten(1).mean(1).clamp(min=1e-5).reshape(-1, *[1] * (
                y.dim() - 1))
        matching = 0.5 * mean_per_sample((y - (y - g).detach()) ** 2)

        t_f = (lo + (hi - lo) * torch.rand(x0.shape[0], device=x0.device, dtype=torch.float64)).to(x0.dtype)
        x_f, n_f = onestep.noised(path, y.detach(), t_f)
        prediction = str(getattr(fake_score, "module", fake_score).prediction)  # under DDP too
        goal = target(prediction, path, t_f, y.detach(), n_f)
        fake_loss = mean_per_sample((fake_score(x_f, t_f, labels) - goal) ** 2)
        return {"model": self.reconstruction_weight * rec + self.idempotence_weight * idem
                + self.matching_weight * matching, "fake_score": fake_loss}


SIGN = register_family(Family(
    name="sign", objectives=(SIGNLoss,), kinds=("idempotent",),
    summary="SIGN-style idempotent network distilled from a teacher's score without an adversary (after Zaman et "
            "al. 2025 and IGN, Shocher et al. 2024)",
    builder=onestep.build, loader=onestep.load))
