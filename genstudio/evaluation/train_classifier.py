"""Train the CIFAR-10 classifier that the evaluator uses as its offline feature extractor.

    export GENSTUDIO_DATA=/path/to/data   # the folder holding cifar10/train.tar.gz and cifar10/test.tar.gz
    python -m genstudio.evaluation.train_classifier --out checkpoints/cifar10_classifier/classifier.safetensors

The recipe is a plain one: SGD with Nesterov momentum, a linear warm-up then linear decay of the
learning rate, label smoothing, random translations (4 pixels by default), flips and Cutout (done on the
device, on uint8 batches held there), bf16 autocast (on GPUs, and on CPUs with AMX, where it is about 3x
faster than float32; `--precision fp32` elsewhere). Test accuracy is measured with flip averaging and written
into the weights' metadata together with the data hashes and the recipe. The defaults are the shipped
classifier's recipe (residual 128/512/512, 80 epochs: 75 s on one H100).
`--init W` starts from trained weights instead (a second learning-rate cycle); `--teacher W` adds a
distillation loss toward W's predictions (`--save-soft-targets`/`--soft-targets` compute those once, to reuse
them elsewhere); `--time-budget S` fits the number of epochs to S seconds.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import save_file
from torch import Tensor

from ..atomic import atomic_write
from ..data import DataError, load_images
from ..data import to_model_range as to_input
from .classifier import CifarResNet, ClassifierError, load_classifier, save_classifier, weights_hash


def augment(x: Tensor, generator: torch.Generator, pad: int = 2, cutout: int = 0) -> Tensor:
    """Random translation by up to `pad` pixels (reflect padding, then a random crop), a random flip, and
    Cutout (DeVries & Taylor 2017): a `cutout` x `cutout` square at a random centre set to 0 (mid-grey)."""
    n, _, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad), mode="reflect")
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=generator, device=x.device)
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=generator, device=x.device)
    out = _crop(padded, dy, dx, h, w)
    flip = torch.rand(n, generator=generator, device=x.device) < 0.5
    out = torch.where(flip[:, None, None, None], out.flip(-1), out)
    if cutout:
        cy = torch.randint(0, h, (n, 1, 1), generator=generator, device=x.device)
        cx = torch.randint(0, w, (n, 1, 1), generator=generator, device=x.device)
        ys, xs = torch.arange(h, device=x.device)[None, :, None], torch.arange(w, device=x.device)[None, None, :]
        dy, dx = ys - (cy - cutout // 2), xs - (cx - cutout // 2)  # offsets inside the square: 0..cutout-1
        hole = (dy >= 0) & (dy < cutout) & (dx >= 0) & (dx < cutout)
        out = out.masked_fill(hole[:, None], 0.0)
    return out


def _crop(padded: Tensor, dy: Tensor, dx: Tensor, h: int, w: int) -> Tensor:
    """Per-sample crops padded[i, :, dy_i:dy_i+h, dx_i:dx_i+w] by gathering rows then columns."""
    n, c, _, wp = padded.shape
    rows = (dy[:, None] + torch.arange(h, device=padded.device))[:, None, :, None].expand(n, c, h, wp)
    out = padded.gather(2, rows)
    cols = (dx[:, None] + torch.arange(w, device=padded.device))[:, None, None, :].expand(n, c, h, w)
    return out.gather(3, cols)


@torch.no_grad()
def _views(model: CifarResNet, images: Tensor, batch_size: int, bf16: bool, mirror: bool):
    """Per batch of uint8 `images`: the float logits of each view (the image, and its mirror when `mirror`)."""
    model.eval()
    for i in range(0, len(images), batch_size):
        x = to_input(images[i:i + batch_size])
        with _autocast(x.device, bf16):
            yield [model(v).float() for v in ((x, x.flip(-1)) if mirror else (x,))]


def accuracy(model: CifarResNet, images: Tensor, labels: Tensor, batch_size: int = 1000, tta: bool = True,
             bf16: bool = True) -> float:
    """Top-1 accuracy; with tta the logits of the image and its mirror image are averaged."""
    predicted = torch.cat([sum(views).argmax(1) for views in _views(model, images, batch_size, bf16, tta)])
    return int((predicted == labels).sum()) / len(images)


def soft_targets(teacher: CifarResNet, images: Tensor, batch_size: int = 1000, bf16: bool = True) -> Tensor:
    """The teacher's class probabilities for uint8 `images`, averaged over the image and its mirror: (N, classes)."""
    return torch.cat([(a.softmax(1) + b.softmax(1)) / 2 for a, b in _views(teacher, images, batch_size, bf16, True)])


SOFT_TARGETS_FORMAT = "genstudio-soft-targets/1"


def save_soft_targets(path: str | Path, probs: Tensor, teacher_hash: str, train_hash: str) -> Path:
    """Write a teacher's soft targets (N, classes) with the hashes of the teacher and the training images."""
    tensors = {"probs": probs.float().cpu().contiguous()}
    meta = {"format": SOFT_TARGETS_FORMAT, "teacher": teacher_hash, "train_hash": train_hash}
    return atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata=meta))


def load_soft_targets(path: str | Path, train_hash: str, n: int) -> tuple[Tensor, str]:
    """Soft targets written by `save_soft_targets` for these n training images: (probs, the teacher's hash)."""
    try:
        with safe_open(str(path), framework="pt") as f:
            meta, probs = f.metadata() or {}, f.get_tensor("probs")
    except Exception as e:  # a missing, truncated or foreign file
        raise ClassifierError(f"{path} is not a soft-targets file ({e})") from e
    if meta.get("format") != SOFT_TARGETS_FORMAT or meta.get("train_hash") != train_hash or len(probs) != n:
        raise ClassifierError(f"{path} holds no soft targets for these {n} training images "
                              f"(format {meta.get('format')}, {len(probs)} rows, train hash {meta.get('train_hash')})")
    return probs, meta["teacher"]


def _autocast(device: torch.device, bf16: bool):
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16)


def train(train_images: Tensor, train_labels: Tensor, *, epochs: int = 80, batch_size: int = 512, lr: float = 0.2,
          momentum: float = 0.9, weight_decay: float = 5e-4, label_smoothing: float = 0.2, warmup: float = 0.15,
          widths: tuple[int, int, int] = (128, 512, 512), residual: bool = True, pad: int = 4, cutout: int = 12,
          bf16: bool = True, seed: int = 0, device: str | torch.device = "cpu", init: CifarResNet | None = None,
          teacher_probs: Tensor | None = None, distill: float = 0.5, time_budget: float | None = None,
          log=print) -> CifarResNet:
    """Train a CifarResNet on uint8 images (N, 3, 32, 32) with int64 labels; returns it in eval mode.

    `init` is trained (in place) instead of a fresh network: a second learning-rate cycle. With
    `teacher_probs` (N, classes), a fraction `distill` of the loss is the cross-entropy to those soft targets
    (knowledge distillation, Hinton et al. 2015), the rest the label-smoothed cross-entropy to the labels.
    With `time_budget` (seconds), `epochs` is a ceiling: after two epochs the run is shortened to the number
    of epochs that fits the budget at the second epoch's pace, and the learning-rate schedule with it.
    The number of epochs trained is `model.epochs_trained`.
    """
    device = torch.device(device)
    torch.manual_seed(seed)
    gen = torch.Generator(device=device).manual_seed(seed)
    model = init if init is not None else CifarResNet(tuple(widths), residual=residual)
    model = model.to(device).to(memory_format=torch.channels_last)
    decay = [p for p in model.parameters() if p.dim() > 1]
    no_decay = [p for p in model.parameters() if p.dim() <= 1]
    opt = torch.optim.SGD([{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
                          lr=lr, momentum=momentum, nesterov=True)
    images, labels = train_images.to(device), train_labels.to(device)
    if teacher_probs is not None:
        teacher_probs = teacher_probs.to(device)
    steps_per_epoch = len(images) // batch_size
    total = epochs * steps_per_epoch
    warm = max(1, int(warmup * total))
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: (s + 1) / warm if s < warm else max(0.0, (total - s) / max(1, total - warm)))
    epoch, t0, last_end = 0, time.perf_counter(), 0.0
    while epoch < epochs:
        model.train()
        order = torch.randperm(len(images), generator=gen, device=device)
        running = torch.zeros((), device=device)
        for b in range(steps_per_epoch):
            idx = order[b * batch_size:(b + 1) * batch_size]
            x = augment(to_input(images[idx]), gen, pad, cutout).contiguous(memory_format=torch.channels_last)
            with _autocast(device, bf16):
                logits = model(x).float()
                loss = F.cross_entropy(logits, labels[idx], label_smoothing=label_smoothing)
                if teacher_probs is not None:
                    loss = (1 - distill) * loss + distill * F.cross_entropy(logits, teacher_probs[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            running += loss.detach()
        log(f"epoch {epoch + 1}/{epochs}  loss {float(running) / steps_per_epoch:.4f}  "
            f"{time.perf_counter() - t0:.1f} s")  # float() waits for the device, so the clock is true
        epoch += 1
        end = time.perf_counter() - t0
        if time_budget is not None and epoch == 2:  # the second epoch's pace: past the first one's warm-up costs
            fits = max(epoch, epoch + int((time_budget - end) / (end - last_end)))
            if fits < epochs:
                epochs, total = fits, fits * steps_per_epoch  # the schedule's lambda reads these
                warm = max(1, int(warmup * total))
                log(f"{epochs} epochs fit the time budget of {time_budget:.0f} s ({end - last_end:.2f} s per epoch)")
        last_end = end
    model.epochs_trained = epochs
    return model.eval()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m genstudio.evaluation.train_classifier",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--train", default="$GENSTUDIO_DATA/cifar10/train.tar.gz",
                   help="training images (any data source; $GENSTUDIO_DATA is expanded)")
    p.add_argument("--test", default="$GENSTUDIO_DATA/cifar10/test.tar.gz",
                   help="test images (any data source; $GENSTUDIO_DATA is expanded)")
    p.add_argument("--out", default="checkpoints/cifar10_classifier/classifier.safetensors")
    p.add_argument("--epochs", type=int, default=80)
    p.add_argument("--batch-size", type=int, default=512)
    p.add_argument("--lr", type=float, default=0.2)
    p.add_argument("--widths", default="128,512,512", help="channels of the three blocks")
    p.add_argument("--residual", action=argparse.BooleanOptionalAction, default=True,
                   help="a third conv and a skip connection in each block (airbench96's layout)")
    p.add_argument("--pad", type=int, default=4, help="random translation, pixels")
    p.add_argument("--cutout", type=int, default=12, help="Cutout square side, pixels (0: off)")
    p.add_argument("--precision", choices=["bf16", "fp32"], default="bf16",
                   help="bf16 autocast: fast on GPUs and on CPUs with AMX; fp32 elsewhere")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--init", help="start from these classifier weights (a second learning-rate cycle); "
                   "their architecture replaces --widths and --residual")
    p.add_argument("--teacher", help="distill from these classifier weights (soft targets on the training images)")
    p.add_argument("--save-soft-targets", metavar="FILE",
                   help="write the --teacher's soft targets on the training images to FILE, and stop")
    p.add_argument("--soft-targets", metavar="FILE", help="distill toward soft targets saved by --save-soft-targets "
                   "(instead of computing them from --teacher)")
    p.add_argument("--distill", type=float, default=0.5, help="weight of the teacher's soft-target loss")
    p.add_argument("--time-budget", type=float, default=None, metavar="SECONDS",
                   help="make --epochs a ceiling: train as many epochs as fit this many seconds (paced on epoch 2)")
    p.add_argument("--limit", type=int, default=0, help="use a random subset of N training images (smoke tests)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = p.parse_args(argv)
    if args.save_soft_targets and not args.teacher:
        p.error("--save-soft-targets needs --teacher")
    try:
        tr = load_images(args.train, split="train")
        te = load_images(args.test, split="test")
    except DataError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    images, labels = tr.images, tr.labels
    if args.limit:  # a fixed random subset (the sources are sorted by class)
        keep = torch.randperm(len(images), generator=torch.Generator().manual_seed(args.seed))[:args.limit]
        images, labels = images[keep], labels[keep]
    bf16 = args.precision == "bf16"
    try:
        init = load_classifier(args.init) if args.init else None
        teacher = load_classifier(args.teacher, args.device) if args.teacher else None
        init_hash, teacher_hash = (weights_hash(f) if f else None for f in (args.init, args.teacher))
        probs = None
        if args.soft_targets:
            probs, teacher_hash = load_soft_targets(args.soft_targets, tr.content_hash, len(images))
    except ClassifierError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    if teacher is not None:
        probs = soft_targets(teacher, images.to(args.device), bf16=bf16)
        if args.save_soft_targets:
            print(f"soft targets -> {save_soft_targets(args.save_soft_targets, probs, teacher_hash, tr.content_hash)}")
            return 0
    model = train(images, labels, epochs=args.epochs, batch_size=min(args.batch_size, len(images)), lr=args.lr,
                  widths=tuple(int(v) for v in args.widths.split(",")), residual=args.residual, pad=args.pad,
                  cutout=args.cutout, bf16=bf16, seed=args.seed, device=args.device, init=init, teacher_probs=probs,
                  distill=args.distill, time_budget=args.time_budget)
    seconds = time.perf_counter() - t0
    test_acc = accuracy(model, te.images.to(args.device), te.labels.to(args.device), bf16=bf16)
    plain_acc = accuracy(model, te.images.to(args.device), te.labels.to(args.device), tta=False, bf16=bf16)
    device_name = torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu"
    meta = {"test_accuracy": test_acc, "test_accuracy_no_tta": plain_acc, "train_hash": tr.content_hash,
            "test_hash": te.content_hash, "train_images": len(images), "epochs": model.epochs_trained,
            "time_budget_s": args.time_budget,
            "batch_size": args.batch_size, "lr": args.lr,
            "widths": ",".join(map(str, model.config["widths"])), "residual": model.config["residual"],
            "pad": args.pad, "cutout": args.cutout, "precision": args.precision, "seed": args.seed,
            "init": init_hash, "teacher": teacher_hash, "distill": args.distill if probs is not None else None,
            "wall_time_s": round(seconds, 1),
            "hardware": device_name, "weights_dtype": "float16 (BatchNorm statistics float32)",
            "recipe": "python -m genstudio.evaluation.train_classifier "
                      + " ".join(sys.argv[1:] if argv is None else argv)}
    out = save_classifier(model, args.out, meta)
    print(json.dumps(meta, indent=1))
    print(f"test accuracy {100 * test_acc:.2f}% (flip-averaged; {100 * plain_acc:.2f}% without) -> {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
