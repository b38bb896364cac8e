"""The two feature extractors of the evaluator, both torch-fidelity `FeatureExtractorBase`s.

- `inception-v3-compat`: torch-fidelity's port of the TensorFlow Inception-v3 that papers report FID/IS
  with (Heusel et al. 2017; Salimans et al. 2016). Its weights come from a local file
  (`--inception-weights PATH`) or torch-fidelity's download into torch hub's cache; they are read with
  `torch.load(weights_only=True)` (or safetensors), never unpickled as code.
- `genstudio-c10`: this project's CIFAR-10 classifier (genstudio.evaluation.classifier): FID/KID/precision-recall on
  its penultimate features (512-d for the shipped network), IS on its logits. Offline and fast on a CPU; its numbers
  are labeled "c10 classifier" and are not comparable with Inception numbers.

Both take uint8 (N, 3, H, W) images, as torch-fidelity's extractors do.
"""
from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import torch
from torch import Tensor
from torch_fidelity.feature_extractor_base import FeatureExtractorBase
from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY, register_feature_extractor

from ..data import to_model_range
from .classifier import ClassifierError, default_classifier_path, load_classifier, weights_hash

__all__ = ["C10_NAME", "INCEPTION_NAME", "EXTRACTORS", "MetricsError", "InceptionWeightsError",
           "C10FeatureExtractor", "Extractor", "make_extractor", "inception_weights_path", "file_sha256"]

C10_NAME = "genstudio-c10"
INCEPTION_NAME = "inception-v3-compat"
EXTRACTORS = {"c10": C10_NAME, "inception": INCEPTION_NAME}


class MetricsError(ValueError):
    """An evaluation that cannot run as asked; the message says what to do."""


class InceptionWeightsError(MetricsError):
    """The Inception-v3 weights are neither given, nor cached, nor downloadable."""


class C10FeatureExtractor(FeatureExtractorBase):
    """torch-fidelity view of genstudio's CIFAR-10 classifier: 'features' (penultimate) and 'logits'."""

    def __init__(self, name: str, features_list: list[str], feature_extractor_weights_path: str | None = None,
                 **kwargs: Any):
        super().__init__(name, features_list)
        # channels-last convolutions: about 1.5x faster on CPUs, same math
        self.net = load_classifier(feature_extractor_weights_path).to(memory_format=torch.channels_last)
        self.bf16 = False  # bfloat16 autocast: about 3.5x faster on CPUs with AMX; features move by ~0.4%
        self.requires_grad_(False)
        self.eval()

    @staticmethod
    def get_provided_features_list() -> tuple[str, ...]:
        return ("features", "logits")

    @staticmethod
    def get_default_feature_layer_for_metric(metric: str) -> str:
        return "logits" if metric == "isc" else "features"

    @staticmethod
    def can_be_compiled() -> bool:
        return False

    @staticmethod
    def get_dummy_input_for_compile() -> Tensor:
        return torch.zeros(1, 3, 32, 32, dtype=torch.uint8)

    def forward(self, x: Tensor) -> tuple[Tensor, ...]:
        if x.dtype != torch.uint8 or x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"expected uint8 (N, 3, H, W) images, got {x.dtype} {tuple(x.shape)}")
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=self.bf16):
            h = self.net.features(to_model_range(x).contiguous(memory_format=torch.channels_last))
            out = {"features": h}
            if "logits" in self.features_list:
                out["logits"] = self.net.head(h)
        return tuple(out[k].float() for k in self.features_list)


if C10_NAME not in FEATURE_EXTRACTORS_REGISTRY:  # a module reload must not register twice
    register_feature_extractor(C10_NAME, C10FeatureExtractor)


# --- Inception-v3 weights ----------------------------------------------------------------------


def _inception_url() -> str:
    from torch_fidelity.feature_extractor_inceptionv3 import URL_INCEPTION_V3

    return URL_INCEPTION_V3


def _download(url: str, dst: Path) -> None:
    """Fetch url to dst, checking the sha256 prefix in the file name as torch hub does (tests replace this)."""
    prefix = url.rsplit("-", 1)[-1].split(".")[0]
    torch.hub.download_url_to_file(url, str(dst), hash_prefix=prefix, progress=True)


def inception_weights_path(path: str | os.PathLike[str] | None = None, download: bool = True) -> Path:
    """A local file of Inception-v3 weights: `path`, else torch hub's cached copy, else downloaded there."""
    if path is not None:
        p = Path(path).expanduser()
        if not p.is_file():
            raise InceptionWeightsError(f"no Inception-v3 weights file at {p}")
        return p
    url = _inception_url()
    cached = Path(torch.hub.get_dir()) / "checkpoints" / url.rsplit("/", 1)[-1]
    if cached.is_file():
        return cached
    why = "downloading is off"
    if download:
        try:
            cached.parent.mkdir(parents=True, exist_ok=True)
            _download(url, cached)
            return cached
        except Exception as e:  # no network: URLError, OSError, timeouts, a bad hash, ...
            why = f"the download failed ({type(e).__name__}: {e})"
    raise InceptionWeightsError(
        f"Inception-v3 weights are not available: not cached at {cached} and {why}. "
        f"Fetch {url} on a machine with internet and pass --inception-weights PATH "
        f"(Python: inception_weights=PATH), or put it at {cached}; "
        f"or score offline with the project's classifier: --extractor c10.")


def _read_state_dict(path: Path) -> dict[str, Tensor]:
    """Tensors only: safetensors, or torch.load(weights_only=True), which refuses pickled code."""
    try:
        if path.name.endswith(".safetensors"):
            from safetensors.torch import load_file

            return load_file(str(path))
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise InceptionWeightsError(f"cannot read Inception-v3 weights from {path} as a tensor-only state dict "
                                    f"({type(e).__name__}: {e})") from None
    if not isinstance(state, dict):
        raise InceptionWeightsError(f"{path} holds a {type(state).__name__}, not a state dict of tensors")
    return state


@contextlib.contextmanager
def _weights_from(state: dict[str, Tensor]) -> Iterator[None]:
    """Make torch-fidelity's Inception constructor take `state` instead of downloading and unpickling."""
    import torch_fidelity.feature_extractor_inceptionv3 as tf_inception

    original = tf_inception.load_state_dict_from_url
    tf_inception.load_state_dict_from_url = lambda *args, **kwargs: state
    try:
        yield
    finally:
        tf_inception.load_state_dict_from_url = original


def _inception(features: list[str], path: Path) -> FeatureExtractorBase:
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    state = _read_state_dict(path)
    try:
        with _weights_from(state):
            return FeatureExtractorInceptionV3(INCEPTION_NAME, features, feature_extractor_weights_path=None,
                                               verbose=False)
    except RuntimeError as e:  # load_state_dict: missing or mismatched keys
        raise InceptionWeightsError(f"{path} does not hold torch-fidelity's Inception-v3 weights ({e})") from None


# --- the extractor as the evaluator uses it ------------------------------------------------------


def file_sha256(path: str | os.PathLike[str]) -> str:
    """sha256 of a file, read in chunks."""
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


@dataclass
class Extractor:
    """A loaded feature extractor plus what names it in a result."""

    kind: str                   # "c10" | "inception"
    name: str                   # torch-fidelity registry name
    label: str                  # what metric labels say, e.g. "c10 classifier features"
    module: FeatureExtractorBase
    weights_path: Path
    weights_hash: str
    layers: dict[str, str] = field(default_factory=dict)  # metric ("fid", "isc", "kid", "prc") -> feature name
    precision: str = "fp32"     # of the features: "fp32", or "bf16" (autocast; c10 only)

    @property
    def feature_layer(self) -> str:
        """The layer FID, KID and precision/recall use (one layer for all three)."""
        return self.layers["fid"]

    @torch.no_grad()
    def __call__(self, images: Tensor) -> dict[str, Tensor]:
        """uint8 (N, 3, H, W) -> {feature name: float32 (N, D) on the CPU}."""
        device = next(self.module.parameters()).device
        out = self.module(images.to(device))
        return {k: v.float().cpu() for k, v in self.module.convert_features_tuple_to_dict(out).items()}

    def describe(self) -> dict[str, Any]:
        marked = {"precision": self.precision} if self.precision != "fp32" else {}  # fp32 records predate the option
        return {"name": self.name, "kind": self.kind, "label": self.label, "weights": str(self.weights_path),
                "weights_sha256": self.weights_hash, "layers": dict(self.layers), **marked}


def make_extractor(kind: str = "c10", *, classifier: str | os.PathLike[str] | None = None,
                   inception_weights: str | os.PathLike[str] | None = None, download: bool = True,
                   device: str | torch.device = "cpu", precision: str = "fp32") -> Extractor:
    """Load the "c10" (classifier at `classifier`, default the shipped one) or "inception" extractor;
    `precision` "bf16" runs the c10 network under bfloat16 autocast."""
    if precision not in ("fp32", "bf16"):
        raise MetricsError(f"feature precision must be fp32 or bf16, got {precision!r}")
    if precision == "bf16" and kind != "c10":
        raise MetricsError("bf16 features are offered for the c10 extractor only: Inception features stay fp32, "
                           "as in the papers' protocol")
    if kind == "c10":
        path = Path(classifier) if classifier is not None else default_classifier_path()
        try:
            layers = {m: C10FeatureExtractor.get_default_feature_layer_for_metric(m)
                      for m in ("fid", "isc", "kid", "prc")}
            module = C10FeatureExtractor(C10_NAME, ["features", "logits"], feature_extractor_weights_path=str(path))
        except ClassifierError as e:
            raise MetricsError(f"the c10 extractor needs the project's CIFAR-10 classifier: {e}") from None
        module.bf16 = precision == "bf16"
        return Extractor("c10", C10_NAME, "c10 classifier features", module.to(device), path, weights_hash(path),
                         layers, precision)
    if kind == "inception":
        from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3 as FE

        path = inception_weights_path(inception_weights, download=download)
        layers = {m: FE.get_default_feature_layer_for_metric(m) for m in ("fid", "isc", "kid", "prc")}
        module = _inception(sorted(set(layers.values())), path)
        return Extractor("inception", INCEPTION_NAME, "Inception-v3", module.to(device), path, file_sha256(path),
                         layers)
    raise MetricsError(f"unknown extractor {kind!r}; choose one of {sorted(EXTRACTORS)}")
