"""The evaluator: FID, IS, KID and precision/recall of a checkpoint's samples (or of any images) against a
reference set, computed by torch-fidelity's metric functions on features streamed batch by batch.

    result = genstudio.evaluate("checkpoints/edm_tiny_cifar10", sampler="heun", steps=18, n=10_000)
    result["metrics"]["fid"], result["labels"]["fid"]   # 12.3, "FID (c10 classifier features)"

Generated images are drawn through the public API (`Pipeline.generate`) one batch at a time; each batch is
turned into features and dropped, so memory holds features, never all the images. The reference set's
features are computed once per (data content hash, extractor, weights hash, layer, subset) and cached
as safetensors + JSON under `<cache>/eval_reference/`. With `sample_cache=True` the generated images are
also kept (uint8, written batch by batch to a memory-mapped .npy under `<cache>/eval_samples/`, keyed by
everything that determines them), so scoring the same samples again with another extractor, classifier or
reference costs only the features. Every result carries its protocol.

Metrics (torch-fidelity 0.4 on features): FID (Heusel et al. 2017), IS (Salimans et al. 2016),
KID (Binkowski et al. 2018), precision/recall (Kynkaanniemi et al. 2019).
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from contextlib import nullcontext
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import numpy as np
import torch
from torch import Tensor

from ..atomic import atomic_folder, write_json
from ..data import DataError, ImageSet, default_cache_dir, load_images, offline_cifar10, to_model_range
from ..processes import Processes, current
from .extractors import Extractor, MetricsError, make_extractor
from .options import ALL_METRICS, DEFAULT_METRICS, EvaluatorOptions, pop_options

__all__ = ["evaluate", "evaluate_images", "Evaluator", "EvaluatorOptions", "default_reference", "metrics_from_features",
           "checkpoint_hash", "MetricsError", "ALL_METRICS", "DEFAULT_METRICS", "DEFAULT_N", "PAPER_N"]

PAPER_N = 50_000                                 # samples behind published CIFAR-10 FIDs
DEFAULT_N = {"inception": PAPER_N, "c10": 10_000}
CACHE_FORMAT = 1
VOLATILE = ("nfe", "wall_seconds", "generation_seconds", "date", "device", "samples",
            "processes")  # may change in a rerun
SAMPLE_KEYS = ("checkpoint", "sampler", "steps", "grid", "grid_times", "guidance", "sampler_options", "n", "seeds",
               "labels", "precision")  # the cell fields that determine the generated images (grid_times: learned)


def default_reference(split: str = "train") -> str:
    """The offline CIFAR-10 copy, $GENSTUDIO_DATA/cifar10/<split>.tar.gz, when the variable is set and the file
    exists, else "cifar10" (torchvision's download)."""
    local = offline_cifar10(split)
    return str(local) if local is not None else "cifar10"


def checkpoint_hash(folder: str | os.PathLike[str]) -> str:
    """sha256 over the model files of a checkpoint (genstudio.json and its subfolders; not its card, nor an
    optimizer state carried beside the model)."""
    folder = Path(folder)
    files = [folder / "genstudio.json"] if (folder / "genstudio.json").is_file() else []
    files += sorted(p for d in sorted(folder.iterdir()) if d.is_dir() and d.name != "optimizer"
                    for p in d.rglob("*") if p.is_file())
    if not files:
        files = sorted(p for p in folder.rglob("*") if p.is_file())
    digest = hashlib.sha256()
    for p in files:
        digest.update(p.relative_to(folder).as_posix().encode() + b"\0")
        digest.update(hashlib.sha256(p.read_bytes()).digest())
    return digest.hexdigest()


def _learned_times(pipe: Any, grid: str) -> dict[str, Any]:
    """A learned grid's times (they live beside the model, in grids.json), for the protocol of a score made on it."""
    learned = pipe.learned_grids().get(grid) if hasattr(pipe, "learned_grids") else None
    return {"grid_times": learned["times"]} if learned else {}


def _tf_version() -> str:
    import torch_fidelity

    return torch_fidelity.__version__


def _bar(total: int, desc: str, progress: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="img", disable=not progress, leave=False)


def _nchw(images: Tensor | np.ndarray) -> Tensor:
    """uint8 (N, 3, H, W) from (N, 3, H, W) or (N, H, W, 3) uint8, numpy or torch."""
    x = torch.from_numpy(np.ascontiguousarray(images)) if isinstance(images, np.ndarray) else images
    if x.dtype != torch.uint8 or x.dim() != 4:
        raise MetricsError(f"images must be uint8 (N, H, W, 3) or (N, 3, H, W); got {x.dtype} {tuple(x.shape)}")
    if x.shape[1] != 3 and x.shape[-1] == 3:
        x = x.permute(0, 3, 1, 2)
    if x.shape[1] != 3:
        raise MetricsError(f"images must have 3 channels; got shape {tuple(x.shape)}")
    return x.contiguous()


def as_image_set(images: Any, split: str = "train", image_size: int | None = None,
                 cache_dir: str | Path | None = None) -> tuple[ImageSet, str]:
    """(ImageSet, a description) from an ImageSet, a uint8 array/tensor or a data source for load_images."""
    if isinstance(images, ImageSet):
        return images, "ImageSet"
    if isinstance(images, (str, os.PathLike)):
        kwargs = {} if image_size is None else {"image_size": image_size}
        return load_images(images, split=split, cache_dir=cache_dir, **kwargs), os.fspath(images)
    x = _nchw(images)
    digest = hashlib.sha256(x.numpy().tobytes())
    digest.update(repr(tuple(x.shape)).encode())
    return ImageSet(x, torch.zeros(len(x), dtype=torch.int64), (), digest.hexdigest()), "in-memory images"


def _subset(n_total: int, n: int | None) -> Tensor | None:
    """A fixed subset of n of n_total indices (seeded permutation 0, sorted); None = all."""
    if n is None or n >= n_total:
        return None
    g = torch.Generator().manual_seed(0)
    return torch.randperm(n_total, generator=g)[:n].sort().values


def metrics_from_features(gen: dict[str, Tensor], ref: Tensor | None, extractor: Extractor,
                          metrics: Sequence[str] = DEFAULT_METRICS, *, kid_subsets: int = 100,
                          kid_subset_size: int = 1000, isc_splits: int = 10, prc_neighborhood: int = 3,
                          rng_seed: int = 2020,
                          ref_test: Tensor | None = None) -> tuple[dict[str, float], dict[str, Any]]:
    """torch-fidelity's metrics on precomputed features: (values, the settings that produced them).

    gen: the generated set's features by layer name; ref: the reference set's `extractor.feature_layer`;
    ref_test: the same features of real images held out from training ("realfake": the test split)."""
    from torch_fidelity.metric_fid import fid_features_to_statistics, fid_statistics_to_metric
    from torch_fidelity.metric_isc import isc_features_to_metric
    from torch_fidelity.metric_kid import kid_features_to_metric
    from torch_fidelity.metric_prc import prc_features_to_metric

    layer = extractor.feature_layer
    values: dict[str, float] = {}
    settings: dict[str, Any] = {"feature_layer": layer, "rng_seed": rng_seed}
    n_gen = len(gen[layer])
    if "fid" in metrics:  # Heusel et al. 2017, Eq. 6 (torch-fidelity: eigenvalues of sigma1 sigma2)
        stats_gen, stats_ref = fid_features_to_statistics(gen[layer]), fid_features_to_statistics(ref)
        values["fid"] = fid_statistics_to_metric(stats_gen, stats_ref, verbose=False)["frechet_inception_distance"]
    if "is" in metrics:  # Salimans et al. 2016: exp E KL(p(y|x) || p(y)), mean and std over splits
        splits = min(isc_splits, n_gen)
        isc_layer = extractor.layers["isc"]
        out = isc_features_to_metric(gen[isc_layer], splits=splits, shuffle=True, rng_seed=rng_seed)
        values["is_mean"], values["is_std"] = out["inception_score_mean"], out["inception_score_std"]
        settings.update(isc_layer=isc_layer, isc_splits=splits)
    if "kid" in metrics:  # Binkowski et al. 2018: unbiased MMD^2, cubic polynomial kernel, over subsets
        size = min(kid_subset_size, n_gen, len(ref))
        out = kid_features_to_metric(gen[layer], ref, kid_subsets=kid_subsets, kid_subset_size=size,
                                     rng_seed=rng_seed, verbose=False)
        values["kid_mean"] = out["kernel_inception_distance_mean"]
        values["kid_std"] = out["kernel_inception_distance_std"]
        settings.update(kid_subsets=kid_subsets, kid_subset_size=size)
    if "pr" in metrics:  # Kynkaanniemi et al. 2019: k-NN manifolds, k = 3; batched distances bound the memory
        out = prc_features_to_metric(gen[layer], ref, prc_neighborhood=prc_neighborhood, save_cpu_ram=True,
                                     verbose=False)
        values.update(precision=out["precision"], recall=out["recall"], f_score=out["f_score"])
        settings.update(prc_neighborhood=prc_neighborhood)
    if "realfake" in metrics:  # a classifier two-sample test (genstudio.audit.twosample) on the features
        from ..audit.twosample import two_sample_test

        if ref_test is None:
            raise MetricsError("realfake needs held-out real images (the test split's features)")
        half = n_gen // 2
        g = torch.Generator().manual_seed(rng_seed)
        real_train = ref[torch.randperm(len(ref), generator=g)[:half]]
        real_test = ref_test[torch.randperm(len(ref_test), generator=g)[:n_gen - half]]
        out = two_sample_test(gen[layer][:half], real_train, gen[layer][half:], real_test, seed=rng_seed)
        values.update(realfake_accuracy=out.accuracy, realfake_ci_low=out.ci95[0], realfake_ci_high=out.ci95[1])
        settings.update(realfake={"classifier": f"{out.classifier} on the {layer} features", "epochs": out.epochs,
                                  "n_train": out.n_train, "n_test": out.n_test,
                                  "rule": "train on the first half of the generated images vs as many reference "
                                          "(train split) images; score the second half vs as many test-split "
                                          "images (seeded draws); 95% Wilson interval; 0.5 = indistinguishable"})
    return values, settings


def _labels_text(extractor: Extractor) -> dict[str, str]:
    """What each number is, naming its extractor: c10 numbers are never called Inception FID."""
    f = extractor.label
    logits = "c10 classifier logits" if extractor.kind == "c10" else "Inception-v3"
    return {"fid": f"FID ({f})", "is_mean": f"IS ({logits})", "is_std": f"IS std over splits ({logits})",
            "kid_mean": f"KID ({f})", "kid_std": f"KID std over subsets ({f})",
            "precision": f"precision, k=3 ({f})", "recall": f"recall, k=3 ({f})", "f_score": f"F-score ({f})",
            "class_accuracy": "accuracy of the c10 classifier on the samples against their requested labels",
            "realfake_accuracy": f"real-vs-generated held-out accuracy, logistic regression on {f} (0.5 = "
                                 f"indistinguishable)",
            "realfake_ci_low": "realfake accuracy, 95% interval low", "realfake_ci_high": "realfake accuracy, "
                                                                                          "95% interval high"}


@dataclass
class Evaluator(EvaluatorOptions):
    """An extractor, a reference set and metric settings, loaded once and used for many scorings. Its options
    are the fields of EvaluatorOptions (genstudio.evaluation.options); reference None = default_reference(split)."""

    _ext: Extractor | None = field(default=None, init=False, repr=False)
    _refs: dict[int, tuple[Tensor, dict[str, Any]]] = field(default_factory=dict, init=False, repr=False)
    _cls: Any = field(default=None, init=False, repr=False)
    procs: Processes = field(default_factory=current, init=False, repr=False)  # the processes sharing the work
    _test: Any = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        if isinstance(self.metrics, str):
            self.metrics = self.metrics.split(",")
        self.metrics = tuple(m.strip() for m in self.metrics)
        bad = sorted(set(self.metrics) - set(ALL_METRICS))
        if bad or not self.metrics:
            raise MetricsError(f"unknown metric(s) {bad}; choose from {', '.join(ALL_METRICS)}")
        for f in fields(EvaluatorOptions):  # every option with choices, from the one declaration
            choices = f.metadata.get("choices")
            if choices and getattr(self, f.name) not in choices:
                raise MetricsError(f"{f.name} must be one of {', '.join(map(repr, choices))}, "
                                   f"got {getattr(self, f.name)!r}")
        if self.batch_size < 1:
            raise MetricsError(f"batch_size must be >= 1, got {self.batch_size}")
        self.device = torch.device(self.device or self.procs.device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.progress = self.progress and self.procs.main
        self.cache = Path(self.cache_dir).expanduser() if self.cache_dir is not None else default_cache_dir()

    @property
    def ext(self) -> Extractor:
        if self._ext is None:
            self._ext = make_extractor(self.extractor, classifier=self.classifier,
                                       inception_weights=self.inception_weights, download=self.download,
                                       device=self.device, precision=self.feature_precision)
        return self._ext

    def classifier_net(self) -> tuple[Any, str | None]:
        """The c10 classifier for class accuracy, or (None, why not)."""
        if self.ext.kind == "c10":
            return self.ext.module.net, None
        if self._cls is None:
            from .classifier import ClassifierError, load_classifier

            try:
                self._cls = (load_classifier(self.classifier, device=self.device), None)
            except ClassifierError as e:
                self._cls = (None, f"no class accuracy: {e}")
        return self._cls

    # --- the reference set ---------------------------------------------------------------------

    def reference_features(self, image_size: int) -> tuple[Tensor, dict[str, Any]]:
        """The reference's `feature_layer` features at this image size (cached) and its description."""
        if image_size in self._refs:
            return self._refs[image_size]
        source = self.reference if self.reference is not None else default_reference(self.split)
        try:
            data, what = as_image_set(source, split=self.split, image_size=image_size, cache_dir=self.cache)
        except DataError as e:
            raise MetricsError(f"cannot load the reference set: {e}") from None
        if data.images.shape[-1] != image_size:
            raise MetricsError(f"reference images are {data.images.shape[-1]}px, the images scored {image_size}px")
        ext = self.ext
        spec = {"format": CACHE_FORMAT, "data": data.content_hash, "extractor": ext.name,
                "weights_sha256": ext.weights_hash, "layer": ext.feature_layer, "n": self.reference_n}
        if ext.precision != "fp32":  # fp32 keys predate the option: they stay as they were
            spec["precision"] = ext.precision
        key = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()
        info = {"source": what, "split": self.split, "content_hash": data.content_hash, "image_size": image_size,
                "n": len(data) if self.reference_n is None else min(self.reference_n, len(data)),
                "subset": None if self.reference_n is None else "first n of a seeded permutation (seed 0)",
                "cache_key": key}
        with self.procs.main_first():  # the main process fills the cache, the others read it
            feats = self._read_reference(key)
            if feats is None:
                index = _subset(len(data), self.reference_n)
                images = data.images if index is None else data.images[index]
                batches = (images[i:i + self.batch_size] for i in range(0, len(images), self.batch_size))
                feats = self._stream(batches, len(images), "reference features")[0][ext.feature_layer]
                self._write_reference(key, feats, {**spec, **info})
        self._refs[image_size] = (feats, info)
        return feats, info

    def test_features(self, image_size: int) -> tuple[Tensor, dict[str, Any]]:
        """The held-out real images' features ("realfake"): the test split of the same reference source."""
        if self.split == "test":
            raise MetricsError("realfake trains on the reference split and scores on the test split: use split train")
        if self._test is None:
            opts = {f.name: getattr(self, f.name) for f in fields(EvaluatorOptions)}
            self._test = Evaluator(**{**opts, "split": "test", "reference_n": None})
            self._test._ext = self.ext
        return self._test.reference_features(image_size)

    def _ref_folder(self, key: str) -> Path:
        return self.cache / "eval_reference" / key

    def _read_reference(self, key: str) -> Tensor | None:
        from safetensors.torch import load_file

        folder = self._ref_folder(key)
        if not (folder / "meta.json").is_file():
            return None
        try:
            return load_file(str(folder / "features.safetensors"))["features"]
        except Exception:  # an unreadable entry is recomputed
            return None

    def _write_reference(self, key: str, feats: Tensor, meta: dict[str, Any]) -> None:
        from safetensors.torch import save_file

        with atomic_folder(self._ref_folder(key)) as tmp:
            save_file({"features": feats.contiguous()}, str(tmp / "features.safetensors"))
            write_json(tmp / "meta.json", {**meta, "count": len(feats), "written": time.strftime("%Y-%m-%d %H:%M:%S")})

    # --- features and scores -------------------------------------------------------------------

    def _stream(self, batches: Iterable[Tensor], total: int, desc: str,
                with_logits: bool = False) -> tuple[dict[str, Tensor], Tensor | None]:
        """Features of uint8 (B, 3, H, W) batches, concatenated; plus classifier logits if asked."""
        feats: dict[str, list[Tensor]] = {}
        logits: list[Tensor] = []
        net = self.classifier_net()[0] if with_logits else None
        with _bar(total, desc, self.progress) as bar:
            for batch in batches:
                for k, v in self.ext(batch).items():
                    feats.setdefault(k, []).append(v)
                if net is not None:
                    with torch.no_grad():
                        logits.append(net(to_model_range(batch.to(self.device))).float().cpu())
                bar.update(len(batch))
        return {k: torch.cat(v) for k, v in feats.items()}, torch.cat(logits) if logits else None

    def _score(self, batches: Iterable[Tensor], n: int, image_size: int, labels: Tensor | None, desc: str,
               num_classes: int | None = None, sizes: list[int] | None = None
               ) -> tuple[dict[str, float], dict[str, str], dict[str, Any], list[str]]:
        """Metrics of streamed batches; class accuracy when labels are given and the classifier fits them.
        `sizes`: the batches are this process's share of batches of these sizes; all processes' are gathered."""
        ref, ref_info = (self.reference_features(image_size) if set(self.metrics) - {"is"} else (None, None))
        notes: list[str] = []
        want_acc = labels is not None
        if want_acc:
            net, why = self.classifier_net()
            classes = num_classes or int(labels.max()) + 1
            if net is None:
                notes.append(why)
                want_acc = False
            elif classes > net.num_classes or (num_classes and num_classes != net.num_classes):
                notes.append(f"no class accuracy: the classifier has {net.num_classes} classes, "
                             f"the images {classes}")
                want_acc = False
        gen, logits = self._stream(batches, n, desc, with_logits=want_acc)
        if sizes is not None:
            gen = {k: self.procs.gather_batches(v, sizes) for k, v in gen.items()}
            logits = self.procs.gather_batches(logits, sizes) if logits is not None else None
        if len(gen[self.ext.feature_layer]) < 2:
            raise MetricsError("need at least 2 images to score")
        ref_test = self.test_features(image_size)[0] if "realfake" in self.metrics else None
        values, settings = metrics_from_features(gen, ref, self.ext, self.metrics, ref_test=ref_test)
        if want_acc:
            values["class_accuracy"] = float((logits.argmax(1) == labels).float().mean())
        texts = {k: v for k, v in _labels_text(self.ext).items() if k in values}
        return values, texts, {"reference": ref_info, "metric_settings": settings}, notes

    def base_protocol(self) -> dict[str, Any]:
        return {"extractor": self.ext.describe(), "metrics": list(self.metrics), "torch_fidelity": _tf_version(),
                "batch_size": self.batch_size}

    def score_images(self, images: Any, labels: Sequence[int] | Tensor | None = None,
                     split: str = "train") -> dict[str, Any]:
        """Score images (ImageSet, uint8 array/tensor, or a data source for load_images at `split`)."""
        t0 = time.perf_counter()
        data, what = as_image_set(images, split=split, cache_dir=self.cache)
        x = data.images
        lab = None if labels is None else torch.as_tensor(labels, dtype=torch.int64).reshape(-1)
        if lab is not None and len(lab) != len(x):
            raise MetricsError(f"{len(lab)} labels for {len(x)} images")
        batches = (x[i:i + self.batch_size] for i in range(0, len(x), self.batch_size))
        values, texts, extra, notes = self._score(batches, len(x), x.shape[-1], lab, "scoring images")
        from_source = isinstance(images, (str, os.PathLike))
        protocol = {"images": {"source": what, "content_hash": data.content_hash,
                               "split": split if from_source else None},
                    "n": len(x), **self.base_protocol(), **extra, "quick": len(x) < DEFAULT_N[self.ext.kind],
                    "wall_seconds": round(time.perf_counter() - t0, 3), "date": time.strftime("%Y-%m-%d %H:%M:%S"),
                    "device": str(self.device)}
        return {"metrics": values, "labels": texts, "protocol": protocol, "notes": notes}

    def cell_spec(self, pipe: Any, checkpoint: str | os.PathLike[str], *, sampler: str | None = None,
                  steps: int | None = None, n: int | None = None, seed: int = 0,
                  labels: Sequence[int] | int | None = None, guidance: float | None = None,
                  grid: str | None = None, sampler_options: dict[str, Any] | None = None) -> dict[str, Any]:
        """Everything that determines a checkpoint's scores, resolved (checkpoint defaults filled in)."""
        d = pipe.defaults()
        sampler = sampler or d["sampler"]
        steps = int(steps if steps is not None else d["steps"])
        n = int(n if n is not None else DEFAULT_N[self.extractor])
        if n < 2:
            raise MetricsError(f"n must be >= 2, got {n}")
        guidance = float(guidance if guidance is not None else d.get("guidance", 1.0))
        if labels is None:
            label_text = f"balanced: image i has label i % {pipe.num_classes}" if pipe.num_classes else None
        elif isinstance(labels, (int, np.integer)):
            label_text = f"all {int(labels)}"
        else:
            label_text = "given: sha256 " + hashlib.sha256(json.dumps([int(v) for v in labels]).encode()).hexdigest()
        _, ref_info = self.reference_features(pipe.image_shape[-1]) if set(self.metrics) - {"is"} else (None, None)
        spec = {"checkpoint": {"path": str(checkpoint), "name": pipe.name, "sha256": checkpoint_hash(checkpoint)},
                "sampler": sampler, "steps": steps, "grid": grid or pipe.grid_for(sampler), "guidance": guidance,
                "sampler_options": sampler_options, "precision": self.precision, "n": n,
                "seeds": {"first": int(seed), "last": int(seed) + n - 1,
                          "rule": "image i starts from the noise of seed + i"},
                "labels": label_text, **self.base_protocol(), "reference": ref_info,
                **_learned_times(pipe, grid or pipe.grid_for(sampler)),
                "quick": n < DEFAULT_N[self.extractor]}
        spec["comparable_to_papers"] = (self.extractor == "inception" and n >= PAPER_N and ref_info is not None
                                        and ref_info["source"] == "cifar10" and ref_info["subset"] is None)
        return json.loads(json.dumps(spec))  # JSON-native, so it compares equal to a stored one

    def score_checkpoint(self, pipe: Any, checkpoint: str | os.PathLike[str], **cell: Any) -> dict[str, Any]:
        """Sample `n` images from a loaded Pipeline batch by batch and score them; see `evaluate`."""
        t0 = time.perf_counter()
        spec = self.cell_spec(pipe, checkpoint, **cell)
        n, seed, labels = spec["n"], spec["seeds"]["first"], cell.get("labels")
        if pipe.num_classes:
            lab = (torch.arange(n) % pipe.num_classes if labels is None
                   else torch.full((n,), int(labels)) if isinstance(labels, (int, np.integer))
                   else torch.as_tensor(list(labels), dtype=torch.int64))
            if len(lab) != n:
                raise MetricsError(f"{len(lab)} labels for n = {n} images")
        elif labels is not None:
            raise MetricsError(f"{pipe.name} is unconditional: it takes no class labels")
        else:
            lab = None
        nfes, gen_seconds = [], [0.0]
        autocast = (torch.autocast(pipe.device.type, dtype=torch.bfloat16) if spec["precision"] == "bf16"
                    else nullcontext())
        starts = list(range(0, n, self.batch_size))  # batch b: images start .. start + size - 1, seeds seed + i
        sizes = [min(self.batch_size, n - start) for start in starts]
        split = 1 < self.procs.world <= len(starts)  # fewer batches than processes: each computes them all
        mine = [starts[b] for b in self.procs.mine(len(starts))] if split else starts

        def batches() -> Iterator[Tensor]:
            for start in mine:
                m = min(self.batch_size, n - start)
                with autocast:
                    res = pipe.generate(m, sampler=spec["sampler"], steps=spec["steps"], seed=seed + start,
                                        labels=None if lab is None else lab[start:start + m].tolist(),
                                        guidance=spec["guidance"], grid=spec["grid"], batch_size=m,
                                        sampler_options=spec["sampler_options"])
                nfes.append(res.nfe)
                gen_seconds[0] += res.seconds
                yield _nchw(res.images)

        def score(stream: Iterable[Tensor]):
            return self._score(stream, n, pipe.image_shape[-1], lab, f"{spec['sampler']} x {spec['steps']}",
                               pipe.num_classes, sizes=sizes if split else None)

        folder = self._samples_folder(spec) if self.sample_cache else None
        cached = self._read_samples(folder, (n, *pipe.image_shape)) if folder is not None else None
        self.procs.barrier()  # every process decided on the cache before the main one writes an entry
        if cached is not None:  # the same images as before: only the features are computed
            images, meta = cached
            nfes.append(meta["nfe"])
            gen_seconds[0] = meta["generation_seconds"]
            values, texts, extra, notes = score(torch.from_numpy(np.array(images[i:i + self.batch_size]))
                                                for i in mine)
        elif folder is not None and split:  # each process keeps its share; the main one writes all
            kept: list[Tensor] = []
            values, texts, extra, notes = score(_collected(batches(), kept))
            everything = self.procs.gather_batches(torch.cat(kept), sizes)
            if self.procs.main:
                with atomic_folder(folder) as tmp:
                    np.save(tmp / "images.npy", everything.numpy())
                    write_json(tmp / "meta.json", self._sample_meta(spec, nfes, gen_seconds[0]))
        elif folder is not None and self.procs.main:
            with atomic_folder(folder) as tmp:
                store = np.lib.format.open_memmap(tmp / "images.npy", mode="w+", dtype=np.uint8,
                                                  shape=(n, *pipe.image_shape))
                values, texts, extra, notes = score(_kept(batches(), store))
                store.flush()
                del store
                write_json(tmp / "meta.json", self._sample_meta(spec, nfes, gen_seconds[0]))
        else:
            values, texts, extra, notes = score(batches())
        if split and cached is None:  # every batch's NFE (an adaptive sampler's differ)
            nfes = self.procs.gather_batches(torch.tensor(nfes, dtype=torch.float64).reshape(-1, 1),
                                             [1] * len(sizes)).flatten().tolist()
        nfe = _mean_nfe(nfes)
        samples = None if folder is None else {"cache_key": folder.name, "reused": cached is not None}
        protocol = {**spec, "metric_settings": extra["metric_settings"], "nfe": nfe,
                    "generation_seconds": round(gen_seconds[0], 3), "wall_seconds": round(time.perf_counter() - t0, 3),
                    "date": time.strftime("%Y-%m-%d %H:%M:%S"), "device": str(self.device), "samples": samples,
                    "processes": self.procs.world}
        return {"metrics": values, "labels": texts, "protocol": protocol, "notes": notes}

    def _sample_meta(self, spec: dict[str, Any], nfes: list[float], seconds: float) -> dict[str, Any]:
        return {"nfe": _mean_nfe(nfes), "generation_seconds": round(seconds, 3),
                "date": time.strftime("%Y-%m-%d %H:%M:%S"), "device": str(self.device), "cell": _sample_ident(spec)}

    # --- the sample cache ----------------------------------------------------------------------

    def _samples_folder(self, spec: dict[str, Any]) -> Path:
        key = hashlib.sha256(json.dumps(_sample_ident(spec), sort_keys=True).encode()).hexdigest()
        return self.cache / "eval_samples" / key

    @staticmethod
    def _read_samples(folder: Path, shape: tuple[int, ...]) -> tuple[np.ndarray, dict[str, Any]] | None:
        """(memory-mapped uint8 images, meta) of a complete cache entry of this shape, or None."""
        try:
            meta = json.loads((folder / "meta.json").read_text())
            images = np.load(folder / "images.npy", mmap_mode="r")
        except (OSError, ValueError):  # absent or unreadable: generated again
            return None
        if images.dtype != np.uint8 or images.shape != shape:
            return None
        return images, meta


def _mean_nfe(nfes: list[float]) -> float:
    """NFE per image over the batches (an adaptive sampler's can differ between batches)."""
    return nfes[0] if len(set(nfes)) == 1 else float(np.mean(nfes))


def _sample_ident(spec: dict[str, Any]) -> dict[str, Any]:
    ident = {k: spec[k] for k in SAMPLE_KEYS if k in spec}
    ident["checkpoint"] = spec["checkpoint"]["sha256"]
    return ident


def _collected(batches: Iterable[Tensor], kept: list[Tensor]) -> Iterator[Tensor]:
    """Pass batches through, keeping each in `kept`."""
    for batch in batches:
        kept.append(batch)
        yield batch


def _kept(batches: Iterable[Tensor], store: np.ndarray) -> Iterator[Tensor]:
    """Pass uint8 (B, 3, H, W) batches through, writing each into `store` at its offset."""
    start = 0
    for batch in batches:
        store[start:start + len(batch)] = batch.numpy()
        start += len(batch)
        yield batch


def evaluate(checkpoint: str | os.PathLike[str] | None = None, *, sampler: str | None = None,
             steps: int | None = None, n: int | None = None, seed: int = 0,
             labels: Sequence[int] | int | None = None, guidance: float | None = None, grid: str | None = None,
             sampler_options: dict[str, Any] | None = None, out: str | os.PathLike[str] | None = None,
             **evaluator: Any) -> dict[str, Any]:
    """Sample n images from a checkpoint (default: the shipped default) and score them against a reference.

    sampler/steps/grid/guidance default to the checkpoint's; n to 50000 with extractor="inception" (fewer is
    marked "quick") and 10000 with "c10"; a class-conditional model gets labels i % num_classes and the c10
    classifier's accuracy on its samples. Evaluator options (`evaluator`): the fields of EvaluatorOptions
    (extractor, reference, split, reference_n, metrics, batch_size, classifier, inception_weights, download,
    cache_dir, device, progress, precision, feature_precision, sample_cache; see its docstring). Writes the
    result to `out` (JSON) if given and returns it: {"metrics", "labels", "protocol", "notes"}.

    Under `accelerate launch` (or torchrun) the processes share the batches and gather the features: image i
    still comes from seed + i, so the scores are those of one process; every process returns them and the
    main one writes `out`."""
    from ..api import Pipeline, default_checkpoint

    checkpoint = Path(checkpoint) if checkpoint is not None else default_checkpoint()
    ev = Evaluator(**pop_options(evaluator))
    if evaluator:
        raise TypeError(f"evaluate() got unexpected argument(s) {sorted(evaluator)}")
    pipe = Pipeline.load(checkpoint, device=ev.device)
    result = ev.score_checkpoint(pipe, checkpoint, sampler=sampler, steps=steps, n=n, seed=seed, labels=labels,
                                 guidance=guidance, grid=grid, sampler_options=sampler_options)
    if out is not None and ev.procs.main:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        write_json(out, result)
    return result


def evaluate_images(images: Any, *, labels: Sequence[int] | None = None, images_split: str = "train",
                    out: str | os.PathLike[str] | None = None, **evaluator: Any) -> dict[str, Any]:
    """Score images against a reference: a uint8 array (N, H, W, 3) / tensor (N, 3, H, W), an ImageSet, or a
    data source (image folder with class subfolders, a tar of one, "cifar10") read at `images_split`.
    With `labels`, also the c10 classifier's accuracy on them. Options as for `evaluate`."""
    ev = Evaluator(**pop_options(evaluator))
    if evaluator:
        raise TypeError(f"evaluate_images() got unexpected argument(s) {sorted(evaluator)}")
    result = ev.score_images(images, labels=labels, split=images_split)
    if out is not None:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        write_json(out, result)
    return result
