"""Stochastic samplers on any path x_t = alpha x0 + sigma eps: Euler ancestral, EDM's stochastic Heun,
Euler-Maruyama on the reverse SDE, predictor-corrector, and annealed Langevin dynamics.

Samplers written for sigma-parametrised models (k-diffusion, EDM, NCSN) run in the scaled variable
x~ = x / alpha with noise level sigma~ = sigma / alpha (Karras et al. 2022, Eq. 4 ff.): there every path
is the VE path x~ = x0 + sigma~ eps, the model is evaluated at x = alpha x~, and d x~ / d sigma~ = eps.
On the EDM path (alpha = 1, sigma = t) they are the original algorithms. They need alpha(t) > 0 on the
grid (the linear path's t = 1 is pure noise: start it at t_max < 1); Euler ancestral does not.
The SDE samplers work in x itself with the score of p_t.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from genstudio.core.noise import randn_like
from genstudio.core.paths import expand

from .registry import register


def _require_alpha(path, ts: Tensor, name: str) -> None:
    alpha = path.alpha(ts)
    if not bool(torch.all(alpha > 0)):
        t_bad = float(ts[alpha <= 0][0])
        raise ValueError(f"sampler {name!r} works in x / alpha(t) and needs alpha(t) > 0 on the whole grid; "
                         f"alpha({t_bad:g}) = 0 on the {path.name!r} path. Start the grid below it "
                         f"(e.g. t_max=0.99 on the linear path) or use euler_ancestral/ddpm.")


def _score_x0(model, x: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
    """(score of p_t at x, x0) from one evaluation: score = -eps / sigma (Song et al. 2021)."""
    x0, eps = model.x0_eps(x, t)
    return -eps / expand(model.path.sigma(t), x), x0


def ancestral_split(sigma_from: Tensor, sigma_to: Tensor, eta: float = 1.0) -> tuple[Tensor, Tensor]:
    """k-diffusion's get_ancestral_step: (sigma_down, sigma_up) with sigma_down^2 + sigma_up^2 = sigma_to^2 and
    sigma_up^2 = eta^2 sigma_to^2 (sigma_from^2 - sigma_to^2) / sigma_from^2 (the DDPM posterior variance at
    eta = 1), capped at sigma_to. Written through sigma_to / sigma_from so that sigma_from = inf works."""
    r = sigma_to / sigma_from
    up = torch.minimum(sigma_to, eta * sigma_to * (1 - r**2).clamp_min(0).sqrt())
    return (sigma_to**2 - up**2).clamp_min(0).sqrt(), up


@register(name="euler_ancestral", needs="field", consumes="x0", stochastic=True, nfe_per_step=1,
          paper="k-diffusion sample_euler_ancestral (Karras et al. 2022 variables; Ho et al. 2020 posterior)")
def sample_euler_ancestral(model, x, ts, *, generator=None, callback=None, eta: float = 1.0, s_noise: float = 1.0):
    """Ancestral Euler in x~ = x / alpha: an Euler step down to sigma_down, then fresh noise of std sigma_up.

    x~_s = x0 + sigma_down eps + s_noise sigma_up z, which is k-diffusion's x~ + (sigma_down - sigma~_t) d with
    d = (x~ - x0) / sigma~_t = eps, then x_s = alpha(s) x~_s. For eta in [0, 1] this is DDIM(eta) on any path;
    eta = 1 is DDPM's ancestral sampler. No noise is added on a step that ends at t = 0.
    """
    path = model.path
    ts = ts.to(x.dtype)
    for i in range(len(ts) - 1):
        t, s = ts[i], ts[i + 1]
        x0, eps = model.x0_eps(x, t)
        down, up = ancestral_split(path.sigma_tilde(t), path.sigma_tilde(s), eta)
        x_scaled = x0 + down * eps
        if s > 0 and eta > 0:
            x_scaled = x_scaled + s_noise * up * randn_like(x, generator)
        x = path.alpha(s) * x_scaled
        if callback:
            callback(i=i, t=s, x=x, x0=x0)
    return x


@register(name="heun_churn", needs="field", consumes="x0", stochastic=True, nfe_per_step=2,
          paper="Karras et al. 2022, EDM, Alg. 2", nfe_offset=-1, default_grid="karras")
def sample_heun_churn(model, x, ts, *, generator=None, callback=None, S_churn: float = 0.0, S_tmin: float = 0.0,
                      S_tmax: float = float("inf"), S_noise: float = 1.0):
    """EDM's stochastic sampler in x~ = x / alpha with time sigma~ = sigma / alpha.

    Each step first raises the noise level to sigma_hat = (1 + gamma) sigma~ with
    gamma = min(S_churn / N, sqrt(2) - 1) when S_tmin <= sigma~ <= S_tmax (EDM's S_tmin/S_tmax are noise
    levels sigma~), adding noise of std S_noise sqrt(sigma_hat^2 - sigma~^2), then takes a Heun step of
    d x~ / d sigma~ = eps to the next level; a step to t = 0 is Euler. The model sees the raised level at
    t_hat = path.t_from_sigma_tilde(sigma_hat), with sigma_hat capped at sigma~(path.t_limit): a bounded
    path such as DDPM's 1000 steps has no time beyond it to show the model.
    S_churn = 0 is Alg. 1: on the EDM path exactly `heun`; on other paths Heun in (x~, sigma~), not in (x, t).
    """
    path = model.path
    ts = ts.to(x.dtype)
    _require_alpha(path, ts[:-1], "heun_churn")
    n = len(ts) - 1
    sig_top = path.sigma_tilde_range(t_max=path.t_limit, cap=math.inf)[1]
    for i in range(n):
        t, s = ts[i], ts[i + 1]
        sig, sig_s = path.sigma_tilde(t), path.sigma_tilde(s)
        x_hat = x / path.alpha(t)
        gamma = min(S_churn / n, math.sqrt(2) - 1) if S_tmin <= float(sig) <= S_tmax else 0.0
        sig_hat, t_hat = sig, t
        if gamma > 0 and float(sig) < sig_top:
            sig_hat = (sig * (1 + gamma)).clamp(max=sig_top)
            t_hat = path.t_from_sigma_tilde(sig_hat).to(ts.dtype)
            x_hat = x_hat + S_noise * (sig_hat**2 - sig**2).sqrt() * randn_like(x, generator)
        x0, d = model.x0_eps(path.alpha(t_hat) * x_hat, t_hat)  # d x~ / d sigma~ = (x~ - D) / sigma~ = eps
        x_next = x_hat + (sig_s - sig_hat) * d
        if s > 0:
            _, d_next = model.x0_eps(path.alpha(s) * x_next, s)
            x_next = x_hat + (sig_s - sig_hat) * (d + d_next) / 2
        x = path.alpha(s) * x_next
        if callback:
            callback(i=i, t=s, x=x, x0=x0)
    return x


def sde_coefficients(path, t: Tensor) -> tuple[Tensor, Tensor]:
    """(f, g^2) of the forward SDE dx = f x dt + g dw whose marginals are x_t = alpha x0 + sigma eps:
    f = alpha'/alpha, g^2 = d(sigma^2)/dt - 2 f sigma^2 (Kingma et al. 2021, App. A; Karras et al. 2022, Eq. 6 ff.).
    VP: f = -beta/2, g^2 = beta; VE/EDM: f = 0, g^2 = d(sigma^2)/dt."""
    f = path.d_alpha(t) / path.alpha(t)
    sigma = path.sigma(t)
    return f, (2 * sigma * path.d_sigma(t) - 2 * f * sigma**2).clamp_min(0)


def euler_maruyama_step(path, x: Tensor, score: Tensor, t: Tensor, s: Tensor, generator) -> Tensor:
    """One Euler-Maruyama step t -> s < t of the reverse SDE dx = [f x - g^2 score] dt + g dw
    (Song et al. 2021, Eq. 6)."""
    f, g2 = sde_coefficients(path, t)
    return x + (s - t) * (f * x - g2 * score) + (g2 * (t - s)).sqrt() * randn_like(x, generator)


@register(name="euler_maruyama", needs="field", consumes="score", stochastic=True, nfe_per_step=1,
          paper="Song et al. 2021, score SDE, Eq. 6 (Euler-Maruyama on the reverse-time SDE)", default_grid="karras",
          ends_denoised=True)
def sample_euler_maruyama(model, x, ts, *, generator=None, callback=None):
    """Euler-Maruyama on the reverse-time SDE of the path; the step to t = 0 returns the denoised
    x0 = E[x0 | x_t] of the last evaluation (as score_sde's `denoise`, with Tweedie's estimate)."""
    path = model.path
    ts = ts.to(x.dtype)
    _require_alpha(path, ts[:-1], "euler_maruyama")
    for i in range(len(ts) - 1):
        t, s = ts[i], ts[i + 1]
        score, x0 = _score_x0(model, x, t)
        x = x0 if s == 0 else euler_maruyama_step(path, x, score, t, s, generator)
        if callback:
            callback(i=i, t=s, x=x, x0=x0)
    return x


def _norm(v: Tensor, norms: str) -> Tensor:
    n = v.flatten(1).norm(dim=1)
    return n.mean() if norms == "batch" else n.reshape(-1, *([1] * (v.ndim - 1)))


@register(name="pc", needs="field", consumes="score", stochastic=True, nfe_per_step=2,
          paper="Song et al. 2021, score SDE, Alg. 1 and App. G, Alg. 2-5 (predictor-corrector)",
          default_grid="karras", ends_denoised=True)
def sample_pc(model, x, ts, *, generator=None, callback=None, predictor: str = "reverse_diffusion",
              corrector: str = "langevin", n_corrector: int = 1, snr: float = 0.16, norms: str = "batch"):
    """Predictor-corrector sampling as score_sde_pytorch's pc_sampler: at each grid time t, `n_corrector`
    Langevin steps at t, then a predictor step t -> s; the step to t = 0 returns the denoised x0.
    Evaluations per step: n_corrector + 1 (the registered nfe_per_step is the default's, 2).

    Predictors: "reverse_diffusion" discretises the forward SDE over [s, t] by its exact transition
    x_t = a x_s + b z, a = alpha_t / alpha_s, b^2 = sigma_t^2 - a^2 sigma_s^2, and steps
    x_s = (2 - a) x + b^2 score + b z (score_sde's ReverseDiffusionPredictor: SMLD's on VE, their
    DDPM-beta discretisation on VP); "euler_maruyama" is `euler_maruyama_step`.
    Correctors: "langevin" is the SNR rule x += h score + sqrt(2 h) z with
    h = 2 r (snr ||z|| / ||score||)^2, where r = (alpha_t / alpha_s)^2 is score_sde's alpha_i = 1 - beta_i on
    VP paths and 1 on VE/EDM; "ald" is score_sde's AnnealedLangevinDynamics corrector, h = 2 r (snr sigma_t)^2.
    As score_sde, the "langevin" rule averages both norms over the batch (norms="batch"), so one step size
    serves the whole batch and a sample depends on its batch-mates: a seed gives the same image at any
    batch size only with corrector="ald" or norms="sample". norms="sample" takes the norms per sample; that
    makes h depend on the sample's own noise and score, which biases the chain (its stationary law is not
    p_t) unless both norms concentrate: in a few dimensions the score can vanish at a sample and h blows
    up, and on anisotropic data the low-variance directions come out too wide.
    """
    if predictor not in ("reverse_diffusion", "euler_maruyama"):
        raise ValueError(f"unknown predictor {predictor!r}; known: reverse_diffusion, euler_maruyama")
    if corrector not in ("langevin", "ald"):
        raise ValueError(f"unknown corrector {corrector!r}; known: langevin, ald")
    if norms not in ("sample", "batch"):
        raise ValueError(f"norms must be 'sample' or 'batch', got {norms!r}")
    if int(n_corrector) != n_corrector or n_corrector < 0:
        raise ValueError(f"n_corrector must be a non-negative integer, got {n_corrector!r}")
    path = model.path
    ts = ts.to(x.dtype)
    _require_alpha(path, ts[:-1], "pc")
    for i in range(len(ts) - 1):
        t, s = ts[i], ts[i + 1]
        r = (path.alpha(t) / path.alpha(s)) ** 2
        for _ in range(int(n_corrector)):
            score, _ = _score_x0(model, x, t)
            z = randn_like(x, generator)
            if corrector == "langevin":
                h = 2 * r * (snr * _norm(z, norms) / _norm(score, norms)) ** 2
            else:
                h = 2 * r * (snr * path.sigma(t)) ** 2
            x = x + h * score + (2 * h).sqrt() * z
        score, x0 = _score_x0(model, x, t)
        if s == 0:
            x = x0
        elif predictor == "euler_maruyama":
            x = euler_maruyama_step(path, x, score, t, s, generator)
        else:
            a = path.alpha(t) / path.alpha(s)
            b2 = (path.sigma(t) ** 2 - a**2 * path.sigma(s) ** 2).clamp_min(0)
            x = (2 - a) * x + b2 * score + b2.sqrt() * randn_like(x, generator)
        if callback:
            callback(i=i, t=s, x=x, x0=x0)
    return x


@register(name="annealed_langevin", needs="field", consumes="score", stochastic=True, nfe_per_step=5,
          paper="Song & Ermon 2019, NCSN, Alg. 1; final denoising: Song & Ermon 2020 (NCSNv2), "
                "Jolicoeur-Martineau et al. 2021", default_grid="logsnr", nfe_offset=1,
          ends_denoised=True)  # logsnr: NCSN's geometric noise levels
def sample_annealed_langevin(model, x, ts, *, generator=None, callback=None, steps_per_level: int = 5,
                             step_lr: float | None = None):
    """Annealed Langevin dynamics in x~ = x / alpha, whose score is alpha * score(x) = -eps / sigma~.

    Step i runs `steps_per_level` (T) Langevin steps x~ += a_i/2 score~ + sqrt(a_i) z at the level
    sigma_i = sigma~(ts[i]) with a_i = step_lr sigma_i^2 / sigma_L^2 (NCSN's eps = step_lr, sigma_L the smallest
    level ts[-2]); NCSN carries x~ unchanged to the next level. When the grid ends at t = 0, one more
    evaluation at sigma_L returns the denoised x0 = x~ + sigma_L^2 score~ (NCSNv2's final denoising), so a
    run of N steps makes N T + 1 evaluations: the registered nfe_per_step = 5 is T's default and the extra
    evaluation is not in it.

    step_lr defaults to sigma_L^2, i.e. a_i = sigma_i^2. NCSN's eps = 2e-5 at sigma_L = 0.01 is 0.2 sigma_L^2,
    made for T = 100 steps per level; with T = 5 such small steps lag behind the annealing (2-D mixtures,
    100 levels: component variances up to 45% too wide). Larger steps bias the chain instead: Langevin
    with step a on a Gaussian of variance v settles at v / (1 - a / 4v), which at the noise levels that
    decide the mixture weights flattens them (a_i = 2 sigma_i^2 gave weight 0.73 for 0.8). At a_i = sigma_i^2,
    T = 5 and 100 levels, weights come out within ~0.03 and variances within ~13%; more steps per level
    with a smaller step_lr do better. No absolute default could serve every path (sigma_L is 0.002 on EDM,
    and a_i must stay below 4 sigma_i^2 for stability).
    """
    if int(steps_per_level) != steps_per_level or steps_per_level < 1:
        raise ValueError(f"steps_per_level must be a positive integer, got {steps_per_level!r}")
    path = model.path
    ts = ts.to(x.dtype)
    levels = ts[:-1]
    _require_alpha(path, levels, "annealed_langevin")
    sig_last = path.sigma_tilde(levels[-1])
    eps_lr = sig_last**2 if step_lr is None else step_lr
    x_scaled = x / path.alpha(ts[0])
    for i, t in enumerate(levels):
        a_t, sig = path.alpha(t), path.sigma_tilde(t)
        step = eps_lr * (sig / sig_last) ** 2
        for _ in range(int(steps_per_level)):
            x0, eps = model.x0_eps(a_t * x_scaled, t)
            x_scaled = x_scaled - step / 2 * eps / sig + step.sqrt() * randn_like(x, generator)
        s = ts[i + 1]
        if s == 0:
            x0, _ = model.x0_eps(a_t * x_scaled, t)
            x = x0
        else:
            x = path.alpha(s) * x_scaled
        if callback:
            callback(i=i, t=s, x=x, x0=x0)
    return x
