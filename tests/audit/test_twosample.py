"""The classifier two-sample test: about 50% for two samples of one distribution, the closed-form Bayes accuracy for
two shifted Gaussians, and near 100% for images that differ plainly."""
import math

import torch

from genstudio.audit.twosample import two_sample_test, wilson_interval


def gaussians(n, shift, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 2, generator=g), torch.randn(n, 2, generator=g) + shift


def test_two_samples_of_one_distribution_are_at_chance():
    a, b = gaussians(4000, torch.zeros(2), 0)
    r = two_sample_test(a[:2000], b[:2000], a[2000:], b[2000:])
    assert abs(r.accuracy - 0.5) < 0.03 and r.ci95[0] < 0.5 < r.ci95[1] + 0.01, r


def test_shifted_gaussians_reach_the_bayes_accuracy():
    shift = torch.tensor([1.0, 0.5])
    bayes = 0.5 * (1 + math.erf(float(shift.norm()) / 2 / math.sqrt(2)))  # Phi(|d| / 2)
    a, b = gaussians(4000, shift, 1)
    r = two_sample_test(a[:2000], b[:2000], a[2000:], b[2000:])
    assert abs(r.accuracy - bayes) < 0.03, (r.accuracy, bayes)
    assert r.ci95[0] < bayes < r.ci95[1]


def test_the_small_cnn_tells_plainly_different_images_apart():
    g = torch.Generator().manual_seed(0)
    real = (0.3 * torch.randn(256, 3, 16, 16, generator=g)).clamp(-1, 1)
    fake = real.roll(1, 0).clone()
    fake[:, :, ::2] = 0.9  # stripes the real images never have
    r = two_sample_test(fake[:128], real[:128], fake[128:], real[128:], epochs=4)
    assert r.accuracy > 0.95, r


def test_wilson_interval():
    lo, hi = wilson_interval(50, 100)
    assert lo < 0.5 < hi and abs((hi - lo) - 0.192) < 0.01
    assert wilson_interval(0, 10)[0] == 0.0 and wilson_interval(10, 10)[1] == 1.0
