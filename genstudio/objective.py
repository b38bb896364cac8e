"""The contract between the training loop and every family's objectives.

The loop hands an objective a `Batch` (images in model range, labels or None, and the paired noise of a fixed
coupling such as reflow pairs, or None), the step and the run's total steps (for curricula), and the modules
it asked for: `extra_modules` are trained and checkpointed with the run but not exported (VCT's noise encoder;
a one-step generator's fake-score network), `frozen_modules` are loaded once and never trained (a distillation
teacher). `optimizer_groups` splits the trainable parameters into named groups, each with its own learning-rate
scale. `loss` returns a per-sample loss (B,), or a dict of per-sample losses, one per group, which the loop
logs apart and sums for the backward pass (each group's loss must reach only its own parameters).

Randomness comes from torch's global RNG, which the trainer seeds per step, so a resumed run draws the same
noise as an uninterrupted one.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, ClassVar

from torch import Tensor, nn

Loss = Tensor | dict[str, Tensor]


@dataclass(frozen=True)
class Batch:
    x0: Tensor                     # (B, ...) in model range
    labels: Tensor | None = None   # (B,) int64; the "no label" class where dropped for guidance
    noise: Tensor | None = None    # (B, ...) paired noise of a fixed coupling; None: draw fresh noise


@dataclass(frozen=True)
class OptimizerGroup:
    name: str
    params: list[nn.Parameter]
    lr_scale: float = 1.0


class Objective:
    """Base of every objective (each a frozen dataclass whose fields are its config options)."""

    name: ClassVar[str]
    takes_pairs: ClassVar[bool] = False  # can train on a fixed (noise, data) coupling

    def extra_modules(self, model: nn.Module, data_shape: tuple[int, ...]) -> dict[str, nn.Module]:
        """Trainable modules beside the model (checkpointed with the run, not exported)."""
        return {}

    def frozen_modules(self, load: Callable[[str], nn.Module]) -> dict[str, nn.Module]:
        """Frozen modules, `load` turning an exported model's folder into a model."""
        return {}

    def optimizer_groups(self, model: nn.Module, extra: dict[str, nn.Module]) -> list[OptimizerGroup]:
        params = [*model.parameters(), *(p for m in extra.values() for p in m.parameters())]
        return [OptimizerGroup("model", params)]

    def loss(self, model, batch: Batch, *, step: int | None = None, total_steps: int | None = None,
             extra: dict[str, nn.Module] | None = None) -> Loss:
        raise NotImplementedError

    def continued(self, steps_done: int, total_steps: int) -> dict[str, Any]:
        """Options that hold a curriculum where a run of `total_steps` stopped after `steps_done` (a fine-tune
        then trains at the base's last stage, not its first); {} for an objective without one."""
        return {}

    def __call__(self, model, x0: Tensor, labels: Tensor | None = None, noise: Tensor | None = None,
                 **kwargs) -> Loss:
        """`loss` on Batch(x0, labels, noise): a shorthand for notebooks and tests."""
        return self.loss(model, Batch(x0, labels, noise), **kwargs)


def mean_per_sample(x: Tensor) -> Tensor:
    return x.flatten(1).mean(1)
