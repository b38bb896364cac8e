"""Memorization: a "model" that returns training images is flagged at 100%; one that returns unseen images of the
same distribution sits at the train-to-test baseline (about 1% below its 1st percentile)."""
import torch

from genstudio.audit.memorization import closest_pairs, flagged, memorization, nearest


def images(n, seed):
    """Smooth random uint8 images (a random low-resolution field upsampled), all from one distribution."""
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(n, 3, 4, 4, generator=g)
    return (torch.nn.functional.interpolate(low, size=8, mode="bilinear", align_corners=False) * 255).round().to(
        torch.uint8)


TRAIN, TEST, UNSEEN = images(3000, 0), images(1000, 1), images(1000, 2)
PROJECT = torch.randn(192, 16, generator=torch.Generator().manual_seed(3))


def embed(x):
    return x.flatten(1).float() @ PROJECT


def test_a_model_that_returns_its_training_images_is_flagged_at_100_percent():
    samples = TRAIN[torch.randperm(3000, generator=torch.Generator().manual_seed(4))[:500]]
    res = memorization(samples, TRAIN, TEST, embed=embed, pixel_scale=1 / 255)
    assert res["pixel"].share_below == 1.0 and res["feature"].share_below == 1.0
    assert flagged(res)
    near, train = closest_pairs(samples, TRAIN, res["pixel"], k=4)
    assert torch.equal(near, train)


def test_a_model_that_returns_unseen_images_sits_at_the_baseline():
    res = memorization(UNSEEN, TRAIN, TEST, embed=embed, pixel_scale=1 / 255)
    for space in ("pixel", "feature"):
        assert res[space].share_below < 0.03, (space, res[space].record())
        median = res[space].record()
        assert abs(median["sample_distance_median"] / median["baseline_median"] - 1) < 0.05
    assert not flagged(res)
    again = memorization(UNSEEN, TRAIN, TEST, pixel_scale=1 / 255, baseline={"pixel": res["pixel"].baseline_distance})
    assert again["pixel"].share_below == res["pixel"].share_below


def test_nearest_matches_brute_force_across_chunks():
    q, bank = torch.randn(7, 5), torch.randn(50, 5)
    d, i = nearest(q, bank, chunk=8)
    full = torch.cdist(q, bank)
    assert torch.equal(i, full.argmin(1)) and torch.allclose(d, full.min(1).values, atol=1e-5)
