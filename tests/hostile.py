"""A corpus of hostile checkpoint folders, each made on the spot from a small valid one (no test here; the tests are
tests/api/test_hostile_checkpoints.py). Every case is a `Case`: the class of attack ("pickles", "weights",
"descriptions", "messages"), the base folder it starts from (a genstudio export, a two-network CAF export, or a
diffusers DDPM pipeline folder), one change to a copy of it, the stage of loading that must refuse it, and a regular
expression the CheckpointError's message must match (it names the file, field or tensor and what is wrong).

    copy = build_base(kind, root)            # once per base
    folder = case.apply(copy_of_base)        # the hostile variant
    corpus_table()                           # cases per class and stage, for a report
"""
from __future__ import annotations

import json
import pickle
import struct
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from safetensors.torch import load_file, save_file

from genstudio.checkpoint import export_model
from genstudio.config import config_from_dict
from genstudio.train import build_model
from tests.helpers import MICRO_UNET, toy_config

WEIGHTS = "diffusion_pytorch_model.safetensors"
MARKER = "UNPICKLED"  # a pickle in the corpus creates this file in its folder when unpickled; it never must be

# -- the valid bases ------------------------------------------------------------------------------------------------


def genstudio_base(root: Path) -> Path:
    """A class-conditional (2 classes) micro-UNet EDM model on 8x8 images, exported (format version 2)."""
    torch.manual_seed(0)
    model = build_model(config_from_dict(toy_config(root, root))).eval()
    return export_model(model, root / "genstudio", training={"steps": 0}, defaults={"sampler": "heun", "steps": 4})


def caf_base(root: Path) -> Path:
    """A CAF model: two components, velocity/ and acceleration/ (6 input channels)."""
    torch.manual_seed(1)
    cfg = toy_config(root, root)
    cfg["model"].update(kind="caf", path={"name": "linear"}, prediction="velocity", precond={"name": "none"})
    cfg["objective"] = {"name": "caf"}
    model = build_model(config_from_dict(cfg)).eval()
    return export_model(model, root / "caf", defaults={"sampler": "caf", "steps": 2})


def diffusers_base(root: Path) -> Path:
    """A diffusers DDPMPipeline folder (google/ddpm-cifar10-32's layout) around an unconditional micro UNet."""
    from diffusers import DDPMPipeline, DDPMScheduler, UNet2DModel

    torch.manual_seed(2)
    unet = UNet2DModel(sample_size=8, in_channels=3, out_channels=3, **MICRO_UNET).eval()
    folder = root / "diffusers"
    DDPMPipeline(unet=unet, scheduler=DDPMScheduler()).save_pretrained(str(folder), safe_serialization=True)
    return folder


BASES: dict[str, Callable[[Path], Path]] = {"genstudio": genstudio_base, "caf": caf_base, "diffusers": diffusers_base}


# -- edits ----------------------------------------------------------------------------------------------------------

def edit_json(file: Path, change: Callable[[Any], Any]) -> None:
    """Rewrite a JSON file with change(data) (which may edit data in place and return None)."""
    data = json.loads(file.read_text())
    out = change(data)
    file.write_text(json.dumps(data if out is None else out))


def meta_edit(**fields: Any) -> Callable[[Path], None]:
    """genstudio.json with these fields set (a value of DROP removes the field)."""
    def apply(folder: Path) -> None:
        edit_json(folder / "genstudio.json", lambda m: _merge(m, fields))
    return apply


def in_meta(key: str, **fields: Any) -> Callable[[Path], None]:
    """genstudio.json with fields set inside the object meta[key] (path, precond, defaults)."""
    def apply(folder: Path) -> None:
        edit_json(folder / "genstudio.json", lambda m: _merge(m.setdefault(key, {}), fields))
    return apply


def config_edit(component: str = "unet", **fields: Any) -> Callable[[Path], None]:
    def apply(folder: Path) -> None:
        edit_json(folder / component / "config.json", lambda c: _merge(c, fields))
    return apply


def scheduler_edit(**fields: Any) -> Callable[[Path], None]:
    def apply(folder: Path) -> None:
        edit_json(folder / "scheduler" / "scheduler_config.json", lambda c: _merge(c, fields))
    return apply


DROP = object()


def _merge(target: dict[str, Any], fields: dict[str, Any]) -> None:
    for k, v in fields.items():
        if v is DROP:
            target.pop(k, None)
        else:
            target[k] = v


def raw_json(name: str, text: str | bytes) -> Callable[[Path], None]:
    def apply(folder: Path) -> None:
        (folder / name).write_bytes(text.encode() if isinstance(text, str) else text)
    return apply


def sparse(name: str, size: int) -> Callable[[Path], None]:
    """Replace a file by one of `size` bytes (sparse: no disk used); the start is a valid-looking JSON opening."""
    def apply(folder: Path) -> None:
        file = folder / name
        file.unlink()
        with open(file, "wb") as f:
            f.write(b'{"format": "genstudio-model", "pad": "')
            f.truncate(size)
    return apply


def weights_edit(change: Callable[[dict[str, torch.Tensor]], Any], component: str = "unet") -> Callable[[Path], None]:
    """The component's safetensors rewritten with change(tensors) (in place, or returning a new dict)."""
    def apply(folder: Path) -> None:
        file = folder / component / WEIGHTS
        tensors = load_file(str(file))
        out = change(tensors)
        save_file(out if isinstance(out, dict) else tensors, str(file), metadata={"format": "pt"})
    return apply


def set_value(name: str, value: float, index: int = 0) -> Callable[[dict[str, torch.Tensor]], None]:
    def change(t: dict[str, torch.Tensor]) -> None:
        t[name].view(-1)[index] = value
    return change


def to_dtype(name: str, dtype: torch.dtype) -> Callable[[dict[str, torch.Tensor]], None]:
    def change(t: dict[str, torch.Tensor]) -> None:
        t[name] = t[name].to(dtype) if dtype != torch.bool else t[name] > 0
    return change


def scale_to(largest: float) -> Callable[[dict[str, torch.Tensor]], None]:
    """Every tensor scaled so its largest entry is `largest` (each one under the per-tensor bound)."""
    def change(t: dict[str, torch.Tensor]) -> None:
        for k, v in t.items():
            peak = float(v.abs().max())
            if peak:
                t[k] = v * (largest / peak)
    return change


def header_edit(change: Callable[[dict[str, Any]], Any], component: str = "unet",
                length: int | None = None) -> Callable[[Path], None]:
    """The safetensors header (JSON after the 8-byte length) rewritten; `length` overrides the length field."""
    def apply(folder: Path) -> None:
        file = folder / component / WEIGHTS
        raw = file.read_bytes()
        (n,) = struct.unpack("<Q", raw[:8])
        header = json.loads(raw[8:8 + n])
        change(header)
        text = json.dumps(header).encode()
        text += b" " * (-len(text) % 8)
        file.write_bytes(struct.pack("<Q", len(text) if length is None else length) + text + raw[8 + n:])
    return apply


def with_length(length: int) -> Callable[[bytes], bytes]:
    """The bytes with their first 8 (a safetensors header's length) replaced."""
    return lambda b: struct.pack("<Q", length) + b[8:]


def first_tensor(header: dict[str, Any]) -> str:
    return sorted(k for k in header if k != "__metadata__")[0]


def write_bytes(component: str, name: str, data: Callable[[bytes], bytes]) -> Callable[[Path], None]:
    """folder/component/name replaced by data(old bytes of the weights file)."""
    def apply(folder: Path) -> None:
        old = (folder / component / WEIGHTS).read_bytes()
        (folder / component / name).write_bytes(data(old))
    return apply


class _Boom:
    """Unpickling this creates the marker file: proof that nothing in the corpus is ever unpickled."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def pickle_file(component: str, name: str, remove_safetensors: bool = False) -> Callable[[Path], None]:
    """A hostile pickle (it would create folder/MARKER if loaded) at folder/component/name."""
    def apply(folder: Path) -> None:
        (folder / component / name).write_bytes(pickle.dumps({"conv_in.weight": _Boom(folder / MARKER)}))
        if remove_safetensors:
            (folder / component / WEIGHTS).unlink()
    return apply


def sharded(component: str = "unet", shard_name: str = "diffusion_pytorch_model-00001-of-00002.bin",
            write_shard: str = "pickle", keep_single: bool = False) -> Callable[[Path], None]:
    """The weights replaced by a sharded index naming `shard_name` (for every tensor); the shard written as a hostile
    pickle ("pickle"), as safetensors ("safetensors") or not at all ("none")."""
    def apply(folder: Path) -> None:
        sub = folder / component
        tensors = load_file(str(sub / WEIGHTS))
        if write_shard == "pickle" and "/" not in shard_name:
            (sub / shard_name).write_bytes(pickle.dumps({"x": _Boom(folder / MARKER)}))
        elif write_shard == "safetensors":
            save_file(tensors, str(sub / shard_name))
        (sub / f"{WEIGHTS}.index.json").write_text(json.dumps({"metadata": {"total_size": 0},
                                                              "weight_map": {k: shard_name for k in tensors}}))
        if not keep_single:
            (sub / WEIGHTS).unlink()
    return apply


def split_shards(component: str = "unet", move: Callable[[dict, dict, dict], None] | None = None
                 ) -> Callable[[Path], None]:
    """The weights split into two safetensors shards plus an index; `move(first, second, weight_map)` then
    corrupts them (edit in place)."""
    def apply(folder: Path) -> None:
        sub = folder / component
        tensors = load_file(str(sub / WEIGHTS))
        keys = sorted(tensors)
        names = ("diffusion_pytorch_model-00001-of-00002.safetensors",
                 "diffusion_pytorch_model-00002-of-00002.safetensors")
        first = {k: tensors[k] for k in keys[: len(keys) // 2]}
        second = {k: tensors[k] for k in keys[len(keys) // 2:]}
        weight_map = {k: names[0] for k in first} | {k: names[1] for k in second}
        if move:
            move(first, second, weight_map)
        save_file(first, str(sub / names[0]))
        save_file(second, str(sub / names[1]))
        (sub / f"{WEIGHTS}.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
        (sub / WEIGHTS).unlink()
    return apply


def nested(depth: int) -> str:
    return '{"format": "genstudio-model", "training": ' + "[" * depth + "]" * depth + "}"


def both(*edits: Callable[[Path], None]) -> Callable[[Path], None]:
    def apply(folder: Path) -> None:
        for e in edits:
            e(folder)
    return apply


def replace_dir(component: str, source: str) -> Callable[[Path], None]:
    """folder/component replaced by a copy of folder/source."""
    import shutil

    def apply(folder: Path) -> None:
        shutil.rmtree(folder / component)
        shutil.copytree(folder / source, folder / component)
    return apply


# -- the corpus -----------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Case:
    group: str       # "pickles", "weights", "descriptions", "messages"
    name: str
    base: str        # "genstudio", "caf" or "diffusers"
    apply: Callable[[Path], None]
    match: str       # a regular expression the CheckpointError message must match
    stage: str       # where loading refuses it (STAGES)
    load: dict[str, Any] = field(default_factory=dict)  # load_model keyword arguments (dtype=...)


STAGES = {
    "files": "the folder scan: a pickle or a non-safetensors weights file, before any weights file is opened",
    "json": "the JSON reader: size cap, nesting cap, syntax",
    "fields": "the field checks of genstudio.json / config.json / scheduler_config.json (type and range)",
    "build": "the UNet built on the meta device: parameter count (nothing allocated)",
    "header": "the safetensors headers against the config: tensor names, shapes, dtypes",
    "values": "the tensor values: finite, at most 1e4 in size",
    "probe": "the probe forward pass: finite output",
    "safetensors": "safetensors' own reason for a corrupt file, surfaced",
    "family": "the family's loader: components that do not fit together",
}

G, C, D = "genstudio", "caf", "diffusers"
NAN, INF = float("nan"), float("inf")
CONV = "conv_in.weight"


def _cases() -> list[Case]:
    cases: list[Case] = []

    def add(group, name, base, apply, match, stage, **load):
        cases.append(Case(group, name, base, apply, match, stage, load))

    # Pickles, however they arrive: never opened, always refused with the way out.
    for base in (G, D):
        add("pickles", f"bin-beside-safetensors-{base}", base, pickle_file("unet", "diffusion_pytorch_model.bin"),
            r"(?s)diffusion_pytorch_model\.bin: pickle.*never loads.*delete", "files")
        add("pickles", f"bin-only-{base}", base, pickle_file("unet", "diffusion_pytorch_model.bin", True),
            r"(?s)has only diffusion_pytorch_model\.bin: pickle.*convert it once to safetensors", "files")
        add("pickles", f"sharded-index-names-bin-{base}", base, sharded(),
            r"(?s)diffusion_pytorch_model-00001-of-00002\.bin: pickle.*never loads", "files")
        add("pickles", f"sharded-index-names-missing-bin-{base}", base, sharded(write_shard="none"),
            r"weight_map\[.*\] = 'diffusion_pytorch_model-00001-of-00002\.bin' names a file that is not "
            r"safetensors", "files")
        add("pickles", f"sharded-index-names-outside-file-{base}", base, sharded(shard_name="../evil.safetensors",
                                                                                write_shard="none"),
            r"weight_map\[.*\] = '\.\./evil\.safetensors' must be a file name in", "files")
    for suffix in (".pt", ".pth", ".pkl", ".ckpt", ".BIN"):
        add("pickles", f"stray{suffix.lower()}-genstudio", G, pickle_file("unet", f"model{suffix}"),
            rf"model{suffix}: pickle file", "files")
    add("pickles", "pickle-in-acceleration-caf", C, pickle_file("acceleration", "diffusion_pytorch_model.bin"),
        r"acceleration has diffusion_pytorch_model\.bin: pickle", "files")
    add("pickles", "pickle-in-scheduler-diffusers", D, pickle_file("scheduler", "scheduler.pkl"),
        r"scheduler has only scheduler\.pkl: pickle", "files")
    add("pickles", "pickle-renamed-safetensors-genstudio", G,
        lambda f: (f / "unet" / WEIGHTS).write_bytes(pickle.dumps({"w": _Boom(f / MARKER)}) + b"\0" * 64),
        r"not a valid safetensors file.*header .*(too large|claims)", "safetensors")
    add("pickles", "torch-save-as-safetensors-genstudio", G,
        lambda f: torch.save({"w": torch.zeros(3)}, str(f / "unet" / WEIGHTS)),
        r"not a valid safetensors file.*header .*(too large|claims)", "safetensors")
    add("pickles", "index-and-single-file-genstudio", G, sharded(write_shard="safetensors",
                                                               shard_name="shard.safetensors", keep_single=True),
        r"has both diffusion_pytorch_model\.safetensors and .*index\.json: .*ambiguous", "files")

    # Weights that cannot be right.
    for base in (G, D):
        add("weights", f"nan-{base}", base, weights_edit(set_value(CONV, NAN)),
            r"tensor conv_in\.weight has 1 non-finite value\(s\)", "values")
    add("weights", "inf-genstudio", G, weights_edit(set_value("conv_out.bias", INF)),
        r"tensor conv_out\.bias has 1 non-finite", "values")
    add("weights", "minus-inf-genstudio", G, weights_edit(set_value("class_embedding.weight", -INF, 5)),
        r"tensor class_embedding\.weight has 1 non-finite", "values")
    add("weights", "all-nan-bias-genstudio", G, weights_edit(lambda t: t["conv_out.bias"].fill_(NAN)),
        r"tensor conv_out\.bias has 3 non-finite value\(s\) \(NaN or inf\) of 3", "values")
    for dtype, code in ((torch.int64, "I64"), (torch.int8, "I8"), (torch.uint8, "U8"), (torch.bool, "BOOL"),
                        (torch.int32, "I32")):
        add("weights", f"dtype-{code.lower()}-genstudio", G, weights_edit(to_dtype(CONV, dtype)),
            rf"tensor conv_in\.weight is {code}; weights must be floating point", "header")
    add("weights", "dtype-f8-genstudio", G, weights_edit(to_dtype(CONV, torch.float8_e4m3fn)),
        r"tensor conv_in\.weight is F8_E4M3; weights must be floating point", "header")
    add("weights", "dtype-int-diffusers", D, weights_edit(to_dtype("conv_out.weight", torch.int16)),
        r"tensor conv_out\.weight is I16", "header")
    add("weights", "absurd-1e30-genstudio", G, weights_edit(set_value(CONV, 1e30)),
        r"tensor conv_in\.weight has values up to 1e\+30 in size, beyond the 10000", "values")
    add("weights", "absurd-5e4-genstudio", G, weights_edit(set_value("time_embedding.linear_1.weight", -5e4)),
        r"tensor time_embedding\.linear_1\.weight has values up to 5e\+04", "values")
    add("weights", "overflow-in-float16-forward-genstudio", G, weights_edit(scale_to(9e3)),
        r"output on a probe image .* non-finite value\(s\).*overflow", "probe", dtype=torch.float16)
    add("weights", "missing-tensor-genstudio", G, weights_edit(lambda t: t.pop("conv_out.bias")),
        r"1 tensor\(s\) the config makes are missing from the weights: conv_out\.bias", "header")
    add("weights", "missing-half-genstudio", G,
        weights_edit(lambda t: {k: v for i, (k, v) in enumerate(sorted(t.items())) if i % 2}),
        r"tensor\(s\) the config makes are missing from the weights: .* and \d+ more", "header")
    add("weights", "extra-tensor-genstudio", G, weights_edit(lambda t: t.update(backdoor=torch.zeros(4))),
        r"1 tensor\(s\) in the weights are not in the network the config makes: backdoor", "header")
    add("weights", "missing-tensor-diffusers", D, weights_edit(lambda t: t.pop("conv_in.bias")),
        r"missing from the weights: conv_in\.bias", "header")
    add("weights", "no-tensors-genstudio", G, weights_edit(lambda t: {}), r"the weights hold no tensors at all",
        "header")
    add("weights", "transposed-genstudio", G,
        weights_edit(lambda t: t.update({"time_embedding.linear_1.weight":
                                         t["time_embedding.linear_1.weight"].T.contiguous()})),
        r"tensor time_embedding\.linear_1\.weight has shape \[16, 64\], but the config makes \[64, 16\]", "header")
    add("weights", "config-wider-than-weights-genstudio", G, config_edit(block_out_channels=[16, 64]),
        r"tensor .* has shape \[.*\], but the config makes", "header")
    add("weights", "config-in-channels-genstudio", G, config_edit(in_channels=4),
        r"tensor conv_in\.weight has shape \[16, 3, 3, 3\], but the config makes \[16, 4, 3, 3\]", "header")
    add("weights", "config-class-embeds-genstudio", G, config_edit(num_class_embeds=5),
        r"tensor class_embedding\.weight has shape \[3, 64\], but the config makes \[5, 64\]", "header")
    add("weights", "nan-in-acceleration-caf", C, weights_edit(set_value(CONV, NAN), "acceleration"),
        r"acceleration: tensor conv_in\.weight has 1 non-finite", "values")
    add("weights", "acceleration-without-velocity-input-caf", C, replace_dir("acceleration", "velocity"),
        r"caf: the CAF acceleration network takes 3 channels of 8x8 .* need 6 channels", "family")
    add("weights", "nan-in-a-shard-genstudio", G,
        split_shards(move=lambda a, b, m: next(iter(b.values())).view(-1).__setitem__(0, NAN)),
        r"tensor .* has 1 non-finite", "values")
    add("weights", "shard-holds-unassigned-tensor-genstudio", G,
        split_shards(move=lambda a, b, m: a.update(stray=torch.zeros(1))),
        r"shard diffusion_pytorch_model-00001-of-00002\.safetensors holds tensor\(s\) its index assigns elsewhere: "
        r"stray", "header")
    add("weights", "index-points-to-wrong-shard-genstudio", G,
        split_shards(move=lambda a, b, m: m.update({next(iter(a)): "diffusion_pytorch_model-00002-of-00002"
                                                                   ".safetensors"})),
        r"the index puts tensor\(s\) .* in shard diffusion_pytorch_model-00002-of-00002\.safetensors, which lacks",
        "header")
    for value, what in ((0, "0"), (-0.5, "-0.5"), (1e300, "1e+300"), ("0.5", "'0.5'")):
        add("weights", f"precond-sigma-data-{what}-genstudio", G, in_meta("precond", sigma_data=value),
            rf"precond\.sigma_data = {what.replace('+', '[+]')} .*must be a number in \(0, 1000\]", "fields")
    add("weights", "precond-sigma-data-nan-genstudio", G,
        lambda f: (f / "genstudio.json").write_text((f / "genstudio.json").read_text().replace(
            '"sigma_data": 0.5', '"sigma_data": NaN')),
        r"precond\.sigma_data = nan is not finite", "fields")
    add("weights", "precond-consistency-negative-sigma-min-genstudio", G,
        in_meta("precond", name="consistency", sigma_min=-1.0),
        r"precond\.sigma_min = -1 is out of range; it must be a number in \[0, 1000\]", "fields")
    add("weights", "precond-output-mismatch-genstudio", G, meta_edit(prediction="eps"),
        r"precond 'edm' outputs 'x0' predictions, but prediction = 'eps'", "fields")

    # Descriptions that cannot be right.
    for value, match in (("2", r"version = '2' is a string; it must be an integer in 1\.\.2"),
                         (2.0, r"version = 2\.0 is a number; it must be an integer in 1\.\.2"),
                         (True, r"version = True is a boolean"),
                         (0, r"version = 0 is out of range; it must be an integer in 1\.\.2"),
                         (99, r"written by a newer genstudio \(format version 99; this one reads 1\.\.2\)")):
        add("descriptions", f"version-{value!r}", G, meta_edit(version=value), match, "fields")
    add("descriptions", "family-unknown", G, meta_edit(family="alchemy"),
        r"unknown family 'alchemy' \(kind 'field'\)", "fields")
    add("descriptions", "family-without-its-kind", G, meta_edit(kind="map"),
        r"family 'diffusion' makes 'field' models, not kind 'map'", "fields")
    add("descriptions", "family-unknown-kind-of-another", G, meta_edit(family="alchemy", kind="map"),
        r"unknown family 'alchemy' \(kind 'map'\)", "fields")
    add("descriptions", "family-a-list", G, meta_edit(family=["diffusion"]),
        r"family = \['diffusion'\] is a list; it must be a string", "fields")
    add("descriptions", "kind-unknown", G, meta_edit(kind="teleport"), r"not kind 'teleport'", "fields")
    add("descriptions", "prediction-unknown", G, meta_edit(prediction="noise"),
        r"prediction = 'noise' is an unknown prediction type; it must be one of 'x0', 'eps'", "fields")
    add("descriptions", "prediction-a-number", G, meta_edit(prediction=5), r"prediction = 5 is an integer", "fields")
    add("descriptions", "path-unknown", G, in_meta("path", name="warp"),
        r"path\.name = 'warp' is an unknown noise path", "fields")
    add("descriptions", "path-a-number", G, meta_edit(path=5), r"path = 5 is an integer; it must be an object",
        "fields")
    add("descriptions", "path-missing", G, meta_edit(path=DROP), r"path is missing", "fields")
    add("descriptions", "path-t-min-nan", G,
        lambda f: (f / "genstudio.json").write_text((f / "genstudio.json").read_text().replace(
            '"t_min": 0.002', '"t_min": NaN')),
        r"path\.t_min = nan is not finite; it must be a number in \[0, 100000\]", "fields")
    add("descriptions", "path-t-max-infinity", G,
        lambda f: (f / "genstudio.json").write_text((f / "genstudio.json").read_text().replace(
            '"t_max": 80.0', '"t_max": Infinity')),
        r"path\.t_max = inf is not finite", "fields")
    add("descriptions", "path-t-max-10-to-the-400", G, in_meta("path", t_max=10**400),
        r"path\.t_max = 10{20}\.\.\. is out of range; it must be a number in \(0, 100000\]", "fields")
    add("descriptions", "path-t-min-negative", G, in_meta("path", t_min=-1.0),
        r"path\.t_min = -1 is out of range; it must be a number in \[0, 100000\]", "fields")
    add("descriptions", "path-t-min-above-t-max", G, in_meta("path", t_min=80.0, t_max=1.0),
        r"path\.t_min = 80 must be < path\.t_max = 1", "fields")
    add("descriptions", "path-t-min-equals-t-max", G, in_meta("path", t_min=5.0, t_max=5.0),
        r"path\.t_min = 5 must be < path\.t_max = 5", "fields")
    add("descriptions", "path-t-max-a-string", G, in_meta("path", t_max="80"),
        r"path\.t_max = '80' is a string; it must be a number", "fields")
    add("descriptions", "path-unknown-field", G, in_meta("path", warp=1.0),
        r"path has unknown field\(s\) 'warp'; its fields: name, t_max, t_min", "fields")
    add("descriptions", "path-linear-past-its-end", G, meta_edit(path={"name": "linear", "t_max": 2.0}),
        r"path\.t_max = 2 is past the end of the 'linear' path", "fields")
    add("descriptions", "path-vp-discrete-num-steps-huge", G,
        meta_edit(path={"name": "vp_discrete", "num_steps": 10**9}, precond={"name": "none"}, prediction="eps"),
        r"path\.num_steps = 1000000000 is out of range; it must be an integer in 1\.\.100000", "fields")
    add("descriptions", "path-vp-discrete-beta-end-above-1", G,
        meta_edit(path={"name": "vp_discrete", "beta_end": 1.5}, precond={"name": "none"}, prediction="eps"),
        r"path\.beta_end = 1\.5 is out of range; it must be a number in \(0, 1\)", "fields")
    add("descriptions", "path-ve-sigmas-reversed", G,
        meta_edit(path={"name": "ve", "sigma_min": 50.0, "sigma_max": 0.01}),
        r"path\.sigma_min = 50 must be < path\.sigma_max = 0\.01", "fields")
    add("descriptions", "precond-unknown", G, in_meta("precond", name="magic"),
        r"precond\.name = 'magic' is an unknown preconditioning", "fields")
    add("descriptions", "precond-unknown-field", G, in_meta("precond", gain=2.0),
        r"precond has unknown field\(s\) 'gain'", "fields")
    for value, match in (("2", r"num_classes = '2' is a string; it must be an integer in 0\.\.100000"),
                         (-1, r"num_classes = -1 is out of range"),
                         (10**9, r"num_classes = 1000000000 is out of range")):
        add("descriptions", f"num-classes-{value!r}", G, meta_edit(num_classes=value), match, "fields")
    for value, match in ((10**9, r"defaults\.steps = 1000000000 is out of range; it must be an integer in "
                                 r"1\.\.10000"),
                         (0, r"defaults\.steps = 0 is out of range"),
                         ("4", r"defaults\.steps = '4' is a string")):
        add("descriptions", f"defaults-steps-{value!r}", G, in_meta("defaults", steps=value), match, "fields")
    add("descriptions", "defaults-sampler-unknown", G, in_meta("defaults", sampler="warp_drive"),
        r"defaults\.sampler = 'warp_drive' is an unknown sampler for a 'field' model", "fields")
    add("descriptions", "defaults-sampler-of-another-kind", G, in_meta("defaults", sampler="caf"),
        r"defaults\.sampler = 'caf' is an unknown sampler for a 'field' model", "fields")
    add("descriptions", "defaults-grid-unknown", G, in_meta("defaults", grid="spiral"),
        r"defaults\.grid = 'spiral' is an unknown time grid; it must be one of 'uniform'", "fields")
    add("descriptions", "defaults-option-unknown", G, in_meta("defaults", sampler="heun_churn", options={"warp": 9}),
        r"defaults\.options has unknown field\(s\) 'warp'; its fields: .*S_churn", "fields")
    add("descriptions", "defaults-option-nan", G, in_meta("defaults", sampler="heun_churn", options={"S_churn": NAN}),
        r"defaults\.options\.S_churn = nan is not finite", "fields")
    add("descriptions", "defaults-unknown-field", G, in_meta("defaults", speed="max"),
        r"defaults has unknown field\(s\) 'speed'", "fields")
    add("descriptions", "defaults-a-list", G, meta_edit(defaults=["heun"]),
        r"defaults = \['heun'\] is a list; it must be an object", "fields")
    add("descriptions", "training-a-string", G, meta_edit(training="yes"), r"training = 'yes' is a string", "fields")
    add("descriptions", "components-unknown", G, meta_edit(components={"vae": {"network": "diffusers.UNet2DModel"}}),
        r"components = \['vae'\]: family 'diffusion' reads the component\(s\) \['unet'\]", "fields")
    add("descriptions", "components-not-an-object", G, meta_edit(components=["unet"]),
        r"components = \['unet'\] is a list; it must be an object", "fields")
    add("descriptions", "components-network-unknown", G, meta_edit(components={"unet": {"network": "torch.load"}}),
        r"components\.unet\.network = 'torch\.load' is an unknown value; it must be one of 'diffusers\.UNet2DModel'",
        "fields")
    add("descriptions", "components-entry-not-an-object", G, meta_edit(components={"unet": "diffusers.UNet2DModel"}),
        r"components\.unet = 'diffusers\.UNet2DModel' must be an object", "fields")
    add("descriptions", "json-nested-100000-deep", G, raw_json("genstudio.json", nested(100_000)),
        r"genstudio\.json is not valid JSON \(nested too deeply", "json")
    add("descriptions", "json-nested-40-deep", G, raw_json("genstudio.json", nested(40)),
        r"genstudio\.json is nested more than 32 levels deep", "json")
    add("descriptions", "json-300-MB", G, sparse("genstudio.json", 300 << 20),
        r"genstudio\.json is larger than 1048576 bytes, too large for a description", "json")
    add("descriptions", "json-2-MB-valid", G,
        lambda f: edit_json(f / "genstudio.json", lambda m: m.update(training={"note": "x" * (2 << 20)})),
        r"genstudio\.json is larger than 1048576 bytes", "json")
    add("descriptions", "json-not-utf8", G, raw_json("genstudio.json", b'{"format": "\xff\xfe"}'),
        r"genstudio\.json is not valid JSON \('utf-8' codec", "json")
    add("descriptions", "json-integer-of-5000-digits", G,
        raw_json("genstudio.json", '{"format": "genstudio-model", "num_classes": ' + "9" * 5000 + "}"),
        r"genstudio\.json is not valid JSON \(Exceeds the limit", "json")
    add("descriptions", "json-a-directory", G,
        lambda f: ((f / "genstudio.json").unlink(), (f / "genstudio.json").mkdir()),
        r"genstudio\.json is not a regular file", "json")
    add("descriptions", "config-sample-size-200000", G, config_edit(sample_size=200000),
        r"config\.json: sample_size = 200000 is out of range; it must be an integer in 1\.\.1024", "fields")
    add("descriptions", "config-sample-size-a-string", G, config_edit(sample_size="8"),
        r"sample_size = '8' is a string", "fields")
    add("descriptions", "config-num-class-embeds-1e9", G, config_edit(num_class_embeds=10**9),
        r"num_class_embeds = 1000000000 is out of range; it must be an integer in 1\.\.100001", "fields")
    add("descriptions", "config-block-out-channels-huge", G, config_edit(block_out_channels=[16, 10**6]),
        r"block_out_channels\[1\] = 1000000 is out of range; it must be an integer in 1\.\.4096", "fields")
    add("descriptions", "config-block-out-channels-100-levels", G, config_edit(block_out_channels=[16] * 100),
        r"block_out_channels = \[16, .* must be a list of 1 to 8 channel counts", "fields")
    add("descriptions", "config-layers-per-block-1e6", G, config_edit(layers_per_block=10**6),
        r"layers_per_block = 1000000 is out of range; it must be an integer in 1\.\.16", "fields")
    add("descriptions", "config-in-channels-0", G, config_edit(in_channels=0), r"in_channels = 0 is out of range",
        "fields")
    add("descriptions", "config-block-type-unknown", G,
        config_edit(down_block_types=["DownBlock2D", "CrossAttnDownBlock2D"]),
        r"down_block_types\[1\] = 'CrossAttnDownBlock2D' is an unknown value", "fields")
    add("descriptions", "config-block-count-mismatch", G, config_edit(up_block_types=["UpBlock2D"]),
        r"up_block_types has 1 blocks, but block_out_channels has 2 levels", "fields")
    add("descriptions", "config-norm-groups-do-not-divide", G, config_edit(norm_num_groups=7),
        r"norm_num_groups = 7 does not divide block_out_channels \[16, 32\]", "fields")
    add("descriptions", "config-unknown-field", G, config_edit(cross_attention_dim=768),
        r"has unknown field\(s\) 'cross_attention_dim'", "fields")
    add("descriptions", "config-another-class", G, config_edit(_class_name="UNet2DConditionModel"),
        r"_class_name = 'UNet2DConditionModel': genstudio reads a diffusers UNet2DModel here", "fields")
    add("descriptions", "config-dropout-1.5", G, config_edit(dropout=1.5),
        r"dropout = 1\.5 is out of range; it must be a number in \[0, 1\)", "fields")
    add("descriptions", "config-act-fn-unknown", G, config_edit(act_fn="rm -rf /"),
        r"act_fn = 'rm -rf /' is an unknown value", "fields")
    add("descriptions", "config-feature-maps-too-large", G,
        config_edit(sample_size=1024, block_out_channels=[4096, 4096], norm_num_groups=32),
        r"sample_size = 1024 with block_out_channels \[4096, 4096\] makes feature maps of 4,294,967,296 values",
        "fields")
    add("descriptions", "config-attention-too-large", G,
        config_edit(sample_size=256, down_block_types=["AttnDownBlock2D", "AttnDownBlock2D"]),
        r"sample_size = 256 puts attention over 65,536 positions \(2 heads\) at level 0", "fields")
    add("descriptions", "config-billions-of-parameters", G,
        config_edit(block_out_channels=[4096, 4096], layers_per_block=16, norm_num_groups=32),
        r"describes a UNet of [\d,]+ parameters, more than the 1,073,741,824 allowed", "build")
    add("descriptions", "config-300-MB", G, sparse("unet/config.json", 300 << 20),
        r"config\.json is larger than 1048576 bytes", "json")
    add("descriptions", "config-nested-100000-deep", G, raw_json("unet/config.json", nested(100_000)),
        r"config\.json is not valid JSON \(nested too deeply", "json")
    add("descriptions", "config-a-list", G, raw_json("unet/config.json", "[1, 2]"),
        r"config\.json is not a JSON object \(it holds a list\)", "json")
    add("descriptions", "config-sample-size-200000-diffusers", D, config_edit(sample_size=200000),
        r"sample_size = 200000 is out of range", "fields")
    add("descriptions", "scheduler-timesteps-a-string-diffusers", D, scheduler_edit(num_train_timesteps="1000"),
        r"num_train_timesteps = '1000' is a string; it must be an integer in 1\.\.100000", "fields")
    add("descriptions", "scheduler-timesteps-1e9-diffusers", D, scheduler_edit(num_train_timesteps=10**9),
        r"num_train_timesteps = 1000000000 is out of range", "fields")
    add("descriptions", "scheduler-beta-end-nan-diffusers", D,
        lambda f: (f / "scheduler" / "scheduler_config.json").write_text(
            (f / "scheduler" / "scheduler_config.json").read_text().replace('"beta_end": 0.02', '"beta_end": NaN')),
        r"beta_end = nan is not finite", "fields")
    add("descriptions", "scheduler-betas-reversed-diffusers", D, scheduler_edit(beta_start=0.02, beta_end=1e-4),
        r"beta_start = 0\.02 must be <= beta_end = 0\.0001", "fields")
    add("descriptions", "scheduler-clip-sample-a-string-diffusers", D, scheduler_edit(clip_sample="yes"),
        r"clip_sample = 'yes' is a string; it must be true or false", "fields")
    add("descriptions", "scheduler-class-a-list-diffusers", D, scheduler_edit(_class_name=["DDPMScheduler"]),
        r"scheduler \['DDPMScheduler'\] is not supported", "fields")
    add("descriptions", "model-index-300-MB-diffusers", D, sparse("model_index.json", 300 << 20),
        r"model_index\.json is larger than 1048576 bytes", "json")
    add("descriptions", "model-index-nested-diffusers", D, raw_json("model_index.json", nested(100_000)),
        r"model_index\.json is not valid JSON \(nested too deeply", "json")
    add("descriptions", "model-index-version-an-object-diffusers", D,
        lambda f: edit_json(f / "model_index.json", lambda m: m.update(_diffusers_version={"a": 1})),
        r"_diffusers_version = \{'a': 1\} must be a short string", "fields")

    # Messages that say why: safetensors' own reason, surfaced.
    for base in (G, D):
        add("messages", f"truncated-{base}", base, write_bytes("unet", WEIGHTS, lambda b: b[: len(b) // 2]),
            r"cannot load .*diffusion_pytorch_model\.safetensors: not a valid safetensors file: safetensors says: "
            r"incomplete metadata, file not fully covered \(the file is truncated", "safetensors")
    add("messages", "empty-file", G, write_bytes("unet", WEIGHTS, lambda b: b""),
        r"safetensors says: header too small \(the file is empty", "safetensors")
    add("messages", "zero-bytes", G, write_bytes("unet", WEIGHTS, lambda b: b"\0" * 64),
        r"safetensors says: invalid JSON in header.*\(the header is not JSON", "safetensors")
    add("messages", "header-length-2-to-the-60", G, write_bytes("unet", WEIGHTS, with_length(2**60)),
        r"its header claims 1152921504606846976 bytes, more than the 16777216 allowed \(header too large",
        "safetensors")
    add("messages", "header-length-past-the-end", G, write_bytes("unet", WEIGHTS, with_length(10**6)),
        r"its header claims 1000000 bytes but the file has \d+ \(truncated\)", "safetensors")
    add("messages", "header-not-json", G, write_bytes("unet", WEIGHTS, lambda b: struct.pack("<Q", 8) + b"{" * 8),
        r"safetensors says: invalid JSON in header", "safetensors")
    add("messages", "invalid-offset", G,
        header_edit(lambda h: h[first_tensor(h)].update(data_offsets=[0, 10**9])),
        r"safetensors says: invalid shape, data type, or offset for tensor .*; tensor class_embedding\.weight's "
        r"data_offsets \[0, 1000000000\] run past the end of the data", "safetensors")
    add("messages", "offsets-overlap", G,
        header_edit(lambda h: h[first_tensor(h)].update(data_offsets=[0, 4])),
        r"safetensors says: .*; tensor class_embedding\.weight of shape \[3, 64\] and dtype F32 needs 768 bytes, "
        r"its data_offsets \[0, 4\] hold 4", "safetensors")
    add("messages", "trailing-bytes", G, write_bytes("unet", WEIGHTS, lambda b: b + b"\0" * 4096),
        r"safetensors says: .*file not fully covered", "safetensors")
    add("messages", "weights-a-directory", G, lambda f: ((f / "unet" / WEIGHTS).unlink(),
                                                         (f / "unet" / WEIGHTS).mkdir()),
        r"diffusion_pytorch_model\.safetensors: it is not a regular file", "safetensors")
    add("messages", "weights-missing", G, lambda f: (f / "unet" / WEIGHTS).unlink(),
        r"unet has no diffusion_pytorch_model\.safetensors \(nor a sharded", "files")
    add("messages", "truncated-acceleration-caf", C, write_bytes("acceleration", WEIGHTS, lambda b: b[:1000]),
        r"acceleration/diffusion_pytorch_model\.safetensors: not a valid safetensors file", "safetensors")
    return cases


CASES: list[Case] = _cases()


# -- every field of every description, set to odd values (a sweep beside the corpus) --------------------------------

ODD_VALUES: list[Any] = [None, True, -1, 0, 10**30, 10**400, -1e-300, float("nan"), "x", [], [[[]]], {"a": 1}, 0.5]
DESCRIPTIONS = [("genstudio", "genstudio.json"), ("genstudio", "unet/config.json"), ("caf", "genstudio.json"),
                ("caf", "acceleration/config.json"), ("diffusers", "model_index.json"),
                ("diffusers", "scheduler/scheduler_config.json"), ("diffusers", "unet/config.json")]


def field_paths(data: Any, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """The key path of every field in nested JSON objects."""
    out = []
    if isinstance(data, dict):
        for key, value in data.items():
            out.append((*prefix, key))
            out.extend(field_paths(value, (*prefix, key)))
    return out


def set_field(file: Path, path: tuple[str, ...], value: Any) -> None:
    def change(data: Any) -> None:
        for key in path[:-1]:
            data = data[key]
        data[path[-1]] = value
    edit_json(file, change)


def corpus_table(cases: list[Case] | None = None) -> str:
    """A Markdown table: per class, the number of cases and the stages that refuse them."""
    cases = CASES if cases is None else cases
    by_group: dict[str, Counter] = {}
    for case in cases:
        by_group.setdefault(case.group, Counter())[case.stage] += 1
    rows = ["| class | cases | how each ends: CheckpointError from (cases) |", "| --- | --- | --- |"]
    for group, stages in by_group.items():
        ends = "; ".join(f"{stage} ({n})" for stage, n in stages.most_common())
        rows.append(f"| {group} | {sum(stages.values())} | {ends} |")
    rows.append(f"| all | {len(cases)} | |")
    return "\n".join(rows)
