"""The computed-balance VAE: on probabilistic-PCA data a linear VAE trained with the computed gamma recovers the
principal subspace, and gamma settles at the closed form (the mean of the discarded eigenvalues); the family trains,
exports, loads, samples from the prior (with a temperature), reconstructs and reports an ELBO bound."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import torch
from torch import Tensor, nn

import genstudio
from genstudio.config import config_from_dict
from genstudio.families.vae import Balanced, ComputedBalanceLoss
from genstudio.objective import Batch
from genstudio.train import run
from tests.helpers import make_toy_folder


class LinearVAE(Balanced):
    """q(z|x) = N(A x + a, diag(exp(s))), x^(z) = W z + b."""

    def __init__(self, d: int, k: int):
        super().__init__()
        self.enc, self.dec = nn.Linear(d, k), nn.Linear(k, d)
        self.log_var = nn.Parameter(torch.zeros(k))

    def posterior(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return self.enc(x), self.log_var.expand(x.shape[0], -1)

    def forward(self, z: Tensor, c_noise=None, labels=None) -> Tensor:
        return self.dec(z)


def test_linear_vae_with_computed_balance_is_probabilistic_pca():
    torch.manual_seed(0)
    d, k, n, noise = 8, 2, 2000, 0.25
    w0 = torch.randn(d, k) * torch.tensor([2.0, 1.2])
    x = torch.randn(n, k) @ w0.T + noise**0.5 * torch.randn(n, d) + 0.3
    x = x.double()
    eigvals, eigvecs = torch.linalg.eigh(torch.cov(x.T, correction=0))  # ascending
    discarded = eigvals[:d - k].mean() + 1 / (12 * 127.5**2)  # plus the uniform dequantization's variance
    net = LinearVAE(d, k).double()
    model, objective = SimpleNamespace(network=net), ComputedBalanceLoss(momentum=0.9)
    opt = torch.optim.Adam(net.parameters(), lr=5e-2)
    gammas = []
    for _ in range(800):
        loss = objective.loss(model, Batch(x)).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        gammas.append(float(net.gamma))
    gamma = float(np.mean(gammas[-100:]))
    # gamma: within 3% of the closed form (the batch MSE of one posterior sample per point fluctuates by ~1%).
    assert abs(gamma / float(discarded) - 1) < 0.03, (gamma, float(discarded))
    # Subspace: the decoder's column space is the top-k eigenvectors' (projectors within 0.05 in Frobenius norm).
    q, _ = torch.linalg.qr(net.dec.weight.detach())
    top = eigvecs[:, d - k:]
    assert torch.linalg.norm(q @ q.T - top @ top.T) < 0.05


def test_vae_trains_exports_loads_samples_reconstructs_and_bounds_bits(tmp_path):
    data = make_toy_folder(tmp_path / "toy")
    config = config_from_dict({
        "model": {"kind": "vae", "unet": {"latent_channels": 2, "hidden": 8, "downsamples": 1}},
        "objective": {"name": "vae_balance", "options": {"momentum": 0.5}},
        "data": {"source": str(data), "image_size": 8, "cache_dir": str(tmp_path / "cache")},
        "train": {"output_dir": str(tmp_path / "run"), "batch_size": 8, "max_steps": 20, "checkpoint_every": 20,
                  "log_every": 1, "progress": False, "lr": 3e-3, "sample_sampler": "decode", "sample_steps": 1},
    })
    result = run(config)
    losses = [r["loss"] for r in genstudio.atomic.read_jsonl(tmp_path / "run" / "metrics.jsonl")]
    assert np.mean(losses[-5:]) < np.mean(losses[:5])

    pipe = genstudio.load(result["model"], device="cpu")
    assert pipe.image_shape == (3, 8, 8) and pipe.model.state_shape == (2, 4, 4)
    assert float(pipe.model.network.gamma) < 1.0  # computed from the reconstructions, not left at its start
    out = pipe.generate(3, seed=0)
    assert out.images.shape == (3, 8, 8, 3) and out.nfe == 1
    assert set(pipe.editors()) == {"interpolate", "reconstruct"}
    rec = pipe.editor("reconstruct").fn(pipe, out.images)
    assert rec.images.shape == out.images.shape
    x = torch.zeros(2, 3, 8, 8)
    bits = pipe.model.nll_bits(x, torch.Generator().manual_seed(0))
    assert bits.shape == (2,) and torch.isfinite(bits).all()
