"""The network registry: backbones F(x, c_noise, labels) that know their image shape and class count and save
themselves as checkpoint components (one folder each, diffusers' save_pretrained layout, safetensors only).

A model's network lists its components (`components()`: name -> backbone); a checkpoint's genstudio.json
records, per component, the registered network that reads its folder (in the spirit of diffusers'
model_index.json). Callers ask a network for `image_shape` and `num_classes`, never for its internals.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from .checks import (
    COMPONENT_NAME,
    MAX_CLASSES,
    MAX_NUM_STEPS,
    CheckpointError,
    Problems,
    read_json_object,
    read_weights,
    refuse_pickles,
    short,
)
from .core.resample import FilteredDown, FilteredUp
from .presets import PRESETS  # plain data, read by the config without torch

NETWORKS: dict[str, type] = {}
WEIGHTS = "diffusion_pytorch_model.safetensors"  # diffusers' file name, in each component folder
MAX_PARAMETERS = 1 << 30  # ~1.07e9 (4 GiB in float32): 30 times the largest net here (DDPM's CIFAR-10, 35.7M)


def register_network(cls: type) -> type:
    """Class decorator: make a backbone loadable by its `name` from a checkpoint's component list."""
    if cls.name in NETWORKS:
        raise ValueError(f"network {cls.name!r} registered twice")
    NETWORKS[cls.name] = cls
    return cls


def unet_config(preset: str, image_size: int = 32, channels: int = 3, num_classes: int = 0,
                **overrides: Any) -> dict[str, Any]:
    """UNet2DModel keyword arguments for a preset; a conditional net gets num_classes + 1 class
    embeddings, the last one being the "no label" class for classifier-free guidance."""
    if preset not in PRESETS:
        raise ValueError(f"unknown network preset {preset!r}; known: {', '.join(PRESETS)}")
    config = dict(sample_size=image_size, in_channels=channels, out_channels=channels, **PRESETS[preset])
    if num_classes:
        config["num_class_embeds"] = num_classes + 1
    config.update(overrides)
    return config


@register_network
class UNetBackbone(nn.Module):
    """F(x, c_noise, labels) on top of diffusers' UNet2DModel."""

    name: ClassVar[str] = "diffusers.UNet2DModel"

    def __init__(self, unet):
        super().__init__()
        self.unet = unet

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> "UNetBackbone":
        """A UNet of UNet2DModel keyword arguments; genstudio's own key "resample" ("conv", the default, or
        "filtered": AliasFreeUNet) picks the resampling layers."""
        from diffusers import UNet2DModel

        config = dict(config)
        resample = config.pop("resample", "conv")
        if resample not in RESAMPLING:
            raise ValueError(f"model.unet.resample = {resample!r} must be one of {', '.join(RESAMPLING)}")
        network = RESAMPLING[resample] if cls is UNetBackbone else cls
        levels = len(config.get("block_out_channels", ())) - 1
        size = config.get("sample_size")
        if isinstance(size, int) and levels > 0 and size % 2**levels:
            raise ValueError(f"data.image_size = {size} must be divisible by {2**levels} "
                             f"(the network downsamples {levels} times)")
        try:
            return network(UNet2DModel(**config))
        except TypeError as e:
            raise ValueError(f"bad UNet2DModel settings {config}: {e}") from None

    @property
    def image_shape(self) -> tuple[int, int, int]:
        cfg = self.unet.config
        return (cfg.in_channels, cfg.sample_size, cfg.sample_size)

    @property
    def config(self) -> dict[str, Any]:
        """The UNet2DModel settings (a copy)."""
        return dict(self.unet.config)

    @property
    def class_embeddings(self) -> int:
        """Class embeddings (num_classes + 1 with the "no label" class; 0 when unconditional)."""
        return self.unet.config.num_class_embeds or 0

    def components(self) -> dict[str, nn.Module]:
        return {"unet": self}

    def forward(self, x: Tensor, c_noise: Tensor, labels: Tensor | None = None) -> Tensor:
        if labels is not None and not self.class_embeddings:
            raise ValueError("class labels given to an unconditional network")
        return self.unet(x, c_noise.float(), class_labels=labels).sample  # the time embedding runs in float32

    def save(self, folder: str | Path) -> None:
        self.unet.save_pretrained(str(folder), safe_serialization=True)

    @classmethod
    def load(cls, folder: str | Path, dtype: torch.dtype | None = None) -> "UNetBackbone":
        """Read a component folder: config.json checked field by field (`unet_settings`), the UNet built on the meta
        device (nothing allocated) and its parameters counted, then the safetensors weights read and checked
        against it (genstudio.checks.read_weights) and assigned. diffusers never opens a weights file."""
        from diffusers import UNet2DModel

        folder = Path(folder)
        file = folder / "config.json"
        settings = unet_settings(read_json_object(file), file)
        try:
            with _empty_weights():
                unet = UNet2DModel.from_config(settings)
        except Exception as e:  # whatever diffusers raises on settings it cannot build
            raise CheckpointError(f"{file}: diffusers cannot build a UNet2DModel from it: {type(e).__name__}: "
                                  f"{e}") from None
        count = sum(p.numel() for p in unet.parameters())
        if count > MAX_PARAMETERS:
            raise CheckpointError(f"{file} describes a UNet of {count:,} parameters, more than the "
                                  f"{MAX_PARAMETERS:,} allowed")
        expected = {k: (tuple(v.shape), v.dtype) for k, v in unet.state_dict().items()}
        unet.load_state_dict(read_weights(folder, expected, dtype, WEIGHTS), strict=True, assign=True)
        left = [n for n, t in [*unet.named_parameters(), *unet.named_buffers()] if t.is_meta]
        if left:
            raise CheckpointError(f"{folder}: the weights leave {', '.join(left[:5])} unset")
        return cls(unet.eval())


class FilteredDownsample(nn.Module):
    """diffusers' Downsample2D with its stride-2 convolution replaced by the alias-free low-pass, subsampling and
    the same convolution at stride 1: the same weights under the same names."""

    def __init__(self, conv: nn.Conv2d):
        super().__init__()
        self.down, self.conv = FilteredDown(), conv
        conv.stride = (1, 1)

    def forward(self, x: Tensor, *args: Any, **kwargs: Any) -> Tensor:
        return self.conv(self.down(x))


class FilteredUpsample(nn.Module):
    """diffusers' Upsample2D with its nearest-neighbour doubling replaced by the alias-free upsampler, then the same
    convolution."""

    def __init__(self, conv: nn.Conv2d):
        super().__init__()
        self.up, self.conv = FilteredUp(), conv

    def forward(self, x: Tensor, output_size: Any = None, *args: Any, **kwargs: Any) -> Tensor:
        if output_size is not None and tuple(output_size) != (2 * x.shape[-2], 2 * x.shape[-1]):
            raise ValueError(f"FilteredUpsample doubles the size; asked for {tuple(output_size)} from "
                             f"{tuple(x.shape[-2:])}")
        return self.conv(self.up(x))


@register_network
class AliasFreeUNet(UNetBackbone):
    """The UNet with alias-free (Kaiser-windowed sinc) up- and downsampling in place of diffusers' strided and
    nearest-neighbour ones, no new parameters (Anjum 2024, config B; genstudio.core.resample). Its folder is a
    plain UNet2DModel's; genstudio.json names this network, so a reader never takes it for a standard UNet."""

    name: ClassVar[str] = "genstudio.AliasFreeUNet2DModel"

    def __init__(self, unet):
        super().__init__(unet)
        from diffusers.models.downsampling import Downsample2D
        from diffusers.models.upsampling import Upsample2D

        for blocks, attr, plain, filtered in ((unet.down_blocks, "downsamplers", Downsample2D, FilteredDownsample),
                                               (unet.up_blocks, "upsamplers", Upsample2D, FilteredUpsample)):
            for block in blocks:
                samplers = getattr(block, attr, None) or []
                for i, layer in enumerate(samplers):
                    if type(layer) is not plain or not isinstance(getattr(layer, "conv", None), nn.Conv2d) or \
                            getattr(layer, "norm", None) is not None or layer.conv.padding != (1, 1):
                        raise ValueError(f"{type(block).__name__}: the alias-free UNet replaces diffusers' "
                                         f"{plain.__name__} with a convolution; this block has a "
                                         f"{type(layer).__name__} (use DownBlock2D/AttnDownBlock2D, "
                                         "UpBlock2D/AttnUpBlock2D, the conv resampling types and downsample_padding 1)")
                    samplers[i] = filtered(layer.conv)

    @property
    def config(self) -> dict[str, Any]:
        return {**dict(self.unet.config), "resample": "filtered"}


RESAMPLING: dict[str, type] = {"conv": UNetBackbone, "filtered": AliasFreeUNet}  # model.unet.resample


class SettingsNetwork(nn.Module):
    """A network of our own (not a diffusers model) built from a small dict of integer settings, `SETTINGS`
    ({name: (lo, hi)}); it saves itself as config.json (the settings) plus safetensors weights, and loads
    through the same checks as a UNet (every setting typed and bounded, the weights' names, shapes and values)."""

    name: ClassVar[str]
    SETTINGS: ClassVar[dict[str, tuple[int, int]]]
    class_embeddings: int = 0  # unconditional

    def __init__(self, **settings: int):
        super().__init__()
        unknown = set(settings) - set(self.SETTINGS)
        if unknown:
            raise ValueError(f"{self.name}: unknown setting(s) {sorted(unknown)}; "
                             f"its settings: {sorted(self.SETTINGS)}")
        for key, (lo, hi) in self.SETTINGS.items():
            value = settings.get(key)
            if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
                raise ValueError(f"{self.name}: setting {key} = {value!r} must be an integer in {lo}..{hi}")
        self.settings = dict(settings)

    def components(self) -> dict[str, nn.Module]:
        return {"network": self}

    def save(self, folder: str | Path) -> None:
        from safetensors.torch import save_file

        from .atomic import write_json

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        write_json(folder / "config.json", {"_class_name": self.name, **self.settings})
        save_file({k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()}, str(folder / WEIGHTS))

    @classmethod
    def load(cls, folder: str | Path, dtype: torch.dtype | None = None) -> "SettingsNetwork":
        folder = Path(folder)
        file = folder / "config.json"
        config = read_json_object(file)
        p = Problems(file)
        if config.get("_class_name", cls.name) != cls.name:
            p.add("_class_name", f"= {short(config['_class_name'])}: this folder is read as a {cls.name}")
        settings = {k: v for k, v in config.items() if not k.startswith("_")}
        p.known_fields(settings, cls.SETTINGS, "")
        for key, (lo, hi) in cls.SETTINGS.items():
            p.integer(settings, key, lo, hi)
        p.check()
        net = cls(**settings)
        expected = {k: (tuple(v.shape), v.dtype) for k, v in net.state_dict().items()}
        net.load_state_dict(read_weights(folder, expected, dtype, WEIGHTS), strict=True)
        return net.to(dtype) if dtype is not None else net


def _empty_weights():
    """A context in which modules get meta-device parameters and skip their random initialisation, as diffusers'
    from_pretrained builds them (accelerate's init_empty_weights, diffusers' no_init_weights): nothing is allocated
    and nothing computed. Without those helpers, torch's meta device (slower: it intercepts every call)."""
    from contextlib import ExitStack

    try:
        from accelerate import init_empty_weights
        from diffusers.models.modeling_utils import no_init_weights
    except ImportError:
        return torch.device("meta")
    stack = ExitStack()
    stack.enter_context(no_init_weights())
    stack.enter_context(init_empty_weights())
    return stack


def first_non_finite(module: nn.Module) -> str | None:
    """The name of the first floating-point tensor of `module` with a NaN or infinite value, or None."""
    return next((name for name, p in module.state_dict().items()
                 if p.is_floating_point() and not torch.isfinite(p).all()), None)


def save_components(components: dict[str, nn.Module], folder: str | Path) -> dict[str, dict[str, str]]:
    """Save each component into folder/<name>; returns genstudio.json's "components" entry."""
    spec = {}
    for name, net in components.items():
        if NETWORKS.get(getattr(type(net), "name", None)) is not type(net):
            raise ValueError(f"component {name!r} is a {type(net).__name__}, not a registered network; "
                             f"registered: {', '.join(NETWORKS)}")
        net.save(Path(folder) / name)
        spec[name] = {"network": type(net).name}
    return spec


def load_components(folder: str | Path, spec: Any, dtype: torch.dtype | None = None) -> dict[str, nn.Module]:
    """The components genstudio.json lists, each read from folder/<name> by its registered network."""
    if not isinstance(spec, dict) or not spec:
        raise CheckpointError(f"genstudio.json's components must name at least one component, got {short(spec)}")
    problems = Problems(Path(folder) / "genstudio.json")
    for name, entry in spec.items():
        if not COMPONENT_NAME.fullmatch(name):
            problems.add(f"components[{short(name)}]", "is not a component name (letters, digits, _ and -, at most "
                                                       "64, naming a subfolder)")
        elif not isinstance(entry, dict):
            problems.add(f"components.{name}", f"= {short(entry)} must be an object {{\"network\": ...}}")
        else:
            problems.known_fields(entry, ("network",), f"components.{name}")
            problems.choice(entry, "network", NETWORKS, field=f"components.{name}.network")
    problems.check()
    out = {}
    for name, entry in spec.items():
        sub = Path(folder) / name
        if not sub.is_dir():
            raise CheckpointError(f"{sub} is missing: genstudio.json lists component {name!r}")
        refuse_pickles(sub)
        if not (sub / "config.json").is_file():
            raise CheckpointError(f"{sub} lacks config.json")
        try:
            out[name] = NETWORKS[entry["network"]].load(sub, dtype=dtype)
        except CheckpointError:
            raise
        except (OSError, ValueError, KeyError, RuntimeError, TypeError) as e:
            raise CheckpointError(f"cannot load {sub}: {type(e).__name__}: {e}") from None
    return out


# -- a UNet2DModel config.json, field by field ------------------------------------------------------------------------

DOWN_BLOCKS = ("DownBlock2D", "AttnDownBlock2D", "SkipDownBlock2D", "AttnSkipDownBlock2D", "ResnetDownsampleBlock2D")
UP_BLOCKS = ("UpBlock2D", "AttnUpBlock2D", "SkipUpBlock2D", "AttnSkipUpBlock2D", "ResnetUpsampleBlock2D")
MAX_SIZE = 1024              # sample_size
MAX_CHANNELS = 4096          # any block_out_channels entry
MAX_ACTIVATION = 1 << 26     # channels x height x width of the largest feature map (256 MiB in float32)
MAX_ATTENTION = 1 << 28      # heads x tokens^2 of an attention map for one image (1 GiB in float32)


def unet_settings(config: dict[str, Any], file: str | Path) -> dict[str, Any]:
    """UNet2DModel keyword arguments of a component's config.json, every field typed and bounded (one line per
    problem in the CheckpointError), and the sizes of the largest feature and attention maps bounded, before
    anything is built. Keys starting with "_" are diffusers' bookkeeping ("_class_name" must be UNet2DModel)."""
    p = Problems(file)
    if "_class_name" in config and config["_class_name"] != "UNet2DModel":
        p.add("_class_name", f"= {short(config['_class_name'])}: genstudio reads a diffusers UNet2DModel here")
    c = {k: v for k, v in config.items() if not k.startswith("_")}
    fields = ("sample_size", "in_channels", "out_channels", "center_input_sample", "time_embedding_type",
              "time_embedding_dim", "freq_shift", "flip_sin_to_cos", "down_block_types", "mid_block_type",
              "up_block_types", "block_out_channels", "layers_per_block", "mid_block_scale_factor",
              "downsample_padding", "downsample_type", "upsample_type", "dropout", "act_fn", "attention_head_dim",
              "norm_num_groups", "attn_norm_num_groups", "norm_eps", "resnet_time_scale_shift", "add_attention",
              "class_embed_type", "num_class_embeds", "num_train_timesteps")
    p.known_fields(c, fields, "")
    size = p.integer(c, "sample_size", 1, MAX_SIZE)  # diffusers allows (h, w): genstudio's images are square
    p.integer(c, "in_channels", 1, 64, default=3)
    p.integer(c, "out_channels", 1, 64, default=3)
    for key in ("center_input_sample", "flip_sin_to_cos", "add_attention"):
        p.boolean(c, key, default=None)
    embedding = p.choice(c, "time_embedding_type", ("positional", "fourier", "learned"), default="positional")
    p.integer(c, "time_embedding_dim", 1, 4 * MAX_CHANNELS, default=None, optional=True)
    p.real(c, "freq_shift", 0, 100, default=0)
    channels = c.get("block_out_channels", (224, 448, 672, 896))
    if not (isinstance(channels, list) and 1 <= len(channels) <= 8):
        p.add("block_out_channels", f"= {short(channels)} must be a list of 1 to 8 channel counts")
        channels = None
    else:
        for i in range(len(channels)):
            if p.integer({"c": channels[i]}, "c", 1, MAX_CHANNELS, field=f"block_out_channels[{i}]") is None:
                channels = None
                break
    blocks = {}
    for key, known, default in (("down_block_types", DOWN_BLOCKS, ("DownBlock2D",) + ("AttnDownBlock2D",) * 3),
                                ("up_block_types", UP_BLOCKS, ("AttnUpBlock2D",) * 3 + ("UpBlock2D",))):
        value = c.get(key, list(default))
        if not isinstance(value, list) or not value or \
                any(p.choice({"b": b}, "b", known, field=f"{key}[{i}]") is None for i, b in enumerate(value)):
            if not isinstance(value, list) or not value:
                p.add(key, f"= {short(value)} must be a list of block names ({', '.join(known)})")
            continue
        blocks[key] = value
        if channels is not None and len(value) != len(channels):
            p.add(key, f"has {len(value)} blocks, but block_out_channels has {len(channels)} levels")
    p.choice(c, "mid_block_type", ("UNetMidBlock2D", None), default="UNetMidBlock2D")
    p.integer(c, "layers_per_block", 1, 16, default=2)
    p.real(c, "mid_block_scale_factor", 0, 1e3, default=1, lo_open=True)
    p.integer(c, "downsample_padding", 0, 8, default=1)
    p.choice(c, "downsample_type", ("conv", "resnet"), default="conv")
    p.choice(c, "upsample_type", ("conv", "resnet"), default="conv")
    p.real(c, "dropout", 0, 1, default=0.0, hi_open=True)
    p.choice(c, "act_fn", ("silu", "swish", "mish", "gelu", "relu"), default="silu")
    head_dim = p.integer(c, "attention_head_dim", 1, MAX_CHANNELS, default=8, optional=True)
    groups = p.integer(c, "norm_num_groups", 1, MAX_CHANNELS, default=32)
    p.integer(c, "attn_norm_num_groups", 1, MAX_CHANNELS, default=None, optional=True)
    p.real(c, "norm_eps", 0, 1, default=1e-5, lo_open=True)
    p.choice(c, "resnet_time_scale_shift", ("default", "scale_shift"), default="default")
    p.choice(c, "class_embed_type", (None, "timestep", "identity"), default=None)
    p.integer(c, "num_class_embeds", 1, MAX_CLASSES + 1, default=None, optional=True)
    steps = p.integer(c, "num_train_timesteps", 1, MAX_NUM_STEPS, default=None, optional=True)
    if embedding == "learned" and steps is None and c.get("num_train_timesteps") is None:
        p.add("num_train_timesteps", f"must be an integer in 1..{MAX_NUM_STEPS} for time_embedding_type 'learned'")
    if channels is not None and groups is not None:
        odd = [ch for ch in channels if ch % groups]
        if odd:
            p.add("norm_num_groups", f"= {groups} does not divide block_out_channels {odd} (GroupNorm needs it to)")
    if not p.lines and channels is not None and isinstance(size, int):  # sizes, once the fields are right
        levels = len(channels) - 1
        if size % 2**levels:
            p.add("sample_size", f"= {size} must be divisible by {2**levels} (the network downsamples {levels} "
                                 "times)")
        else:
            feature = max(ch * (size // 2**i) ** 2 for i, ch in enumerate(channels))
            if feature > MAX_ACTIVATION:
                p.add("sample_size", f"= {size} with block_out_channels {channels} makes feature maps of {feature:,} "
                                     f"values per image, more than the {MAX_ACTIVATION:,} allowed")
            attention = [i for i, b in enumerate(blocks.get("down_block_types", ())) if b.startswith("Attn")]
            if c.get("add_attention", True) and c.get("mid_block_type", "UNetMidBlock2D"):
                attention.append(levels)
            for i in attention:
                tokens = (size // 2**i) ** 2
                heads = max(1, channels[i] // (head_dim or channels[i]))
                if heads * tokens**2 > MAX_ATTENTION:
                    p.add("sample_size", f"= {size} puts attention over {tokens:,} positions ({heads} heads) at level "
                                         f"{i}: {heads * tokens**2:,} attention weights per image, more than the "
                                         f"{MAX_ATTENTION:,} allowed")
                    break
    p.check()
    return c
