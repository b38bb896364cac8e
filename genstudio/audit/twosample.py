"""Real vs generated: a classifier two-sample test (Lopez-Paz & Oquab 2017; CIFAKE, Bird & Lotfi 2024, trains such a
real-vs-fake classifier on CIFAR-10-like images).

A small classifier learns to tell generated samples from real images on one part of each; its accuracy on held-out
samples and real images it never saw, with equal numbers of each, says how far apart the two are: 50% when they are
indistinguishable, 100% when every image is told apart. Images get a small CNN, vectors a logistic regression
(the Bayes-optimal rule between two Gaussians of equal covariance is linear).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn


def small_cnn(channels: int = 3) -> nn.Module:
    """Three conv blocks (32, 64, 128 channels), global average pooling, one logit."""
    layers: list[nn.Module] = []
    for c_in, c_out in ((channels, 32), (32, 64), (64, 128)):
        layers += [nn.Conv2d(c_in, c_out, 3, padding=1), nn.GroupNorm(8, c_out), nn.SiLU(), nn.MaxPool2d(2)]
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(128, 1))


def wilson_interval(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """The Wilson score interval of a binomial proportion k / n (95% for z = 1.96)."""
    if n == 0:
        return 0.0, 1.0
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


@dataclass
class TwoSampleResult:
    accuracy: float
    ci95: tuple[float, float]
    n_test: int
    n_train: int
    classifier: str
    epochs: int

    def record(self) -> dict[str, Any]:
        return {"accuracy": self.accuracy, "ci95": list(self.ci95), "n_test": self.n_test, "n_train": self.n_train,
                "classifier": self.classifier, "epochs": self.epochs,
                "protocol": "train on generated samples vs real train-split images; score held-out samples vs "
                            "test-split images (equal counts); 95% Wilson interval; 0.5 = indistinguishable"}


def _balanced(a: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
    m = min(len(a), len(b))
    x = torch.cat([a[:m], b[:m]]).float()
    return x, torch.cat([torch.zeros(m), torch.ones(m)])


CNN_STEPS = 600  # optimizer steps for images: 8 epochs of 256 images (16 steps) left the CNN at chance (docs/audit.md)


def two_sample_test(fake_train: Tensor, real_train: Tensor, fake_test: Tensor, real_test: Tensor, *,
                    epochs: int | None = None, batch_size: int = 128, lr: float | None = None,
                    seed: int = 0) -> TwoSampleResult:
    """Train on (fake_train vs real_train), score on (fake_test vs real_test); images (N, C, H, W) in [-1, 1] get
    `small_cnn` (by default for at least 8 epochs and CNN_STEPS optimizer steps), vectors (N, D) a standardised
    logistic regression. Each pair is cut to equal counts."""
    torch.manual_seed(seed)
    x, y = _balanced(fake_train, real_train)
    xt, yt = _balanced(fake_test, real_test)
    images = x.ndim == 4
    if images:
        net, kind = small_cnn(x.shape[1]), "small CNN (3 conv blocks, 94k parameters)"
        epochs, lr = epochs or max(8, math.ceil(CNN_STEPS / math.ceil(len(x) / batch_size))), lr or 2e-3
    else:
        mean, std = x.mean(0), x.std(0).clamp_min(1e-8)
        x, xt = (x - mean) / std, (xt - mean) / std
        net, kind = nn.Linear(x.shape[1], 1), "logistic regression"
        epochs, lr = epochs or 60, lr or 5e-2
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    g = torch.Generator().manual_seed(seed)
    net.train()
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=g)
        for start in range(0, len(x), batch_size):
            idx = order[start:start + batch_size]
            xb = x[idx]
            if images:  # random flips: the classifier should not key on orientation
                flip = torch.rand(len(xb), generator=g) < 0.5
                xb = torch.where(flip[:, None, None, None], xb.flip(-1), xb)
            loss = nn.functional.binary_cross_entropy_with_logits(net(xb).squeeze(1), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    net.eval()
    with torch.no_grad():
        pred = torch.cat([net(xt[i:i + 512]).squeeze(1) for i in range(0, len(xt), 512)]) > 0
    correct = int((pred.float() == yt).sum())
    return TwoSampleResult(correct / len(yt), wilson_interval(correct, len(yt)), len(yt), len(y), kind, epochs)
