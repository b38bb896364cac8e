"""The family registry: each family declares itself once, in a `Family` record, and everything else asks it.

A family owns its objectives, the model kinds it makes, how a training config becomes a model, and how
genstudio.json plus its loaded components become one again. Nothing outside genstudio/families/ names a family.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from torch import nn

from genstudio.config import Config
from genstudio.core.paths import path_from_config
from genstudio.core.precond import precond_from_config
from genstudio.model import Model
from genstudio.nets import CheckpointError, UNetBackbone, unet_config

FAMILIES: dict[str, "Family"] = {}


def build_unet_model(family: "Family", config: Config) -> Model:
    """The common case: one diffusers UNet of the config's preset under a Model on the config's path."""
    m = config.model
    unet = unet_config(m.network, image_size=config.data.image_size, num_classes=m.num_classes, **m.unet)
    return Model(UNetBackbone.from_config(unet), path_from_config(m.path), m.prediction,
                 precond_from_config(m.precond), m.num_classes, family=family.name, kind=m.kind)


def load_single_network(family: "Family", meta: dict[str, Any], components: dict[str, nn.Module]) -> Model:
    """The common case: a Model around the checkpoint's one component."""
    if len(components) != 1:
        raise CheckpointError(f"family {family.name!r} reads one component, got {len(components)}: "
                              f"{', '.join(sorted(components))}")
    (network,) = components.values()
    return Model.from_spec({**meta, "family": family.name}, network)


@dataclass(frozen=True)
class Family:
    name: str
    objectives: tuple[type, ...]          # its objective classes (each with a unique `name`)
    kinds: tuple[str, ...] = ("field",)   # the model kinds it makes (samplers declare the kinds they drive)
    summary: str = ""                     # one line, with the papers
    components: tuple[str, ...] = ("unet",)  # its models' components() names: its checkpoints' folders
    builder: Callable[["Family", Config], Model] = build_unet_model
    loader: Callable[["Family", dict[str, Any], dict[str, nn.Module]], Model] = load_single_network
    # A foreign checkpoint layout this family reads: (is_foreign(folder), load(folder, device, dtype) -> (model, meta)).
    foreign: tuple[Callable[[Path], bool], Callable[..., tuple[Model, dict[str, Any]]]] | None = None

    def build(self, config: Config) -> Model:
        if config.model.kind not in self.kinds:
            raise ValueError(f"family {self.name!r} makes {' or '.join(map(repr, self.kinds))} models, not "
                             f"model.kind = {config.model.kind!r}; set model.kind = {self.kinds[0]!r}")
        return self.builder(self, config)

    def load(self, meta: dict[str, Any], components: dict[str, nn.Module]) -> Model:
        return self.loader(self, meta, components)


def register_family(family: Family) -> Family:
    """Add a family; its objectives' names must be new."""
    if family.name in FAMILIES:
        raise ValueError(f"family {family.name!r} registered twice")
    taken = objectives()
    clash = [o.name for o in family.objectives if o.name in taken]
    if clash:
        raise ValueError(f"family {family.name!r}: objective(s) {clash} already belong to another family")
    FAMILIES[family.name] = family
    return family


def unregister_family(name: str) -> None:
    """Remove a family (for tests that define one of their own)."""
    FAMILIES.pop(name, None)


def get_family(name: str) -> Family:
    if name not in FAMILIES:
        raise ValueError(f"unknown family {name!r}; known: {', '.join(FAMILIES)}")
    return FAMILIES[name]


def objectives() -> dict[str, type]:
    """Every objective class by name."""
    return {o.name: o for f in FAMILIES.values() for o in f.objectives}


def family_of_objective(name: str) -> Family:
    for f in FAMILIES.values():
        if any(o.name == name for o in f.objectives):
            return f
    raise ValueError(f"unknown objective {name!r}; known: {', '.join(objectives())}")


def objective_from_config(name: str, options: dict[str, Any] | None = None):
    """The objective `name` with `options`; unknown names or options are clear errors."""
    cls = objectives().get(name) or family_of_objective(name)  # the latter raises with the known names
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = set(options or {}) - fields
    if unknown:
        raise ValueError(f"objective {name!r} has no option(s) {sorted(unknown)}; its options: {sorted(fields)}")
    return cls(**(options or {}))


def build_from_config(config: Config) -> tuple[Model, Any]:
    """(model, objective) of a training config: the objective's family builds the model."""
    objective = objective_from_config(config.objective.name, config.objective.options)
    return family_of_objective(config.objective.name).build(config), objective


def family_for_checkpoint(name: Any, kind: str, version: int) -> Family:
    """The family that reads a checkpoint recording family `name` and model kind `kind`: the named one, which
    must make that kind. Version-1 files named the family a kind descended from (a kind-"caf" model said family
    "flow"): for them, the one family that makes that kind reads them."""
    if name in FAMILIES and kind in FAMILIES[name].kinds:
        return FAMILIES[name]
    makers = [f for f in FAMILIES.values() if kind in f.kinds]
    if version < 2 and len(makers) == 1:
        return makers[0]
    if name in FAMILIES:
        raise ValueError(f"family {name!r} makes {' or '.join(map(repr, FAMILIES[name].kinds))} models, not "
                         f"kind {kind!r}")
    raise ValueError(f"unknown family {name!r} (kind {kind!r}); known families: {', '.join(FAMILIES)}")
