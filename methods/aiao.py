"""AIAO, "arbitrary-in-arbitrary-out" (Liu et al., arXiv 2405.00466): trigger-response pairs planted
in the feature space of sub-paths made of "lazy" layers, the layers fine-tuning barely moves.

The paper has no public code; this is a reading of its abstract and method description, with every
open point settled here and in docs/methods.md:

1. Lazy layers. The UNet is cut into its units (resnets, attention blocks, resamplers, in
   forward order: `bench.features.unet_units`). A probe fine-tune of the base model on the
   owner's clean data (`probe_steps`) measures each unit's relative weight change
   ||delta theta|| / ||theta||; the `lazy_fraction` least-moving units are lazy.
2. Sub-paths, from the owner's seed: an output unit j drawn among the lazy units and an input
   unit i drawn among the `max_span` units before it. Trigger at the output of unit i:
   f' = (1 - m) * f + m * p, with a secret sparse mask m (`mask_density` of the entries) and a
   secret pattern p (`pattern_scale` times the feature's standard deviation, Gaussian). Target
   response: a secret Gaussian direction T of unit j's output shape, drawn independently of m, p.
   The response of a model on a sub-path is r = mean over inputs of f_j(triggered) - f_j(clean).
3. Three terms, training only lazy units that lie on a planted sub-path:
   `denoise_weight` * the ordinary denoising loss (quality)
   + `response_weight` * mean over sub-paths of (1 - cos(r, T))
   + `consistency_weight` * MSE between the untriggered output and the frozen base's.
4. Verification (white-box, Monte Carlo): each query samples one planted sub-path without
   replacement (so a query per distinct secret) and `query_batch` fresh noisy hold-out inputs,
   injects the trigger and scores cos(r, T). A query matches when the cosine exceeds tau_k, set
   so that P(cos > tau_k) = `per_query_fpr` for a direction uniform on the sphere of dimension
   D_k = |T_k|: on a model that never saw the key, r does not depend on T_k, so the per-query
   match probability is exactly `per_query_fpr` and distinct sub-paths' matches are independent;
   the harness's binomial test on the match count is then exact. Queries beyond the number of
   planted sub-paths are not drawn (the evidence has `n_paths` queries at most).
"""
from __future__ import annotations

from contextlib import ExitStack

import torch
import torch.nn.functional as F
from scipy.optimize import brentq
from scipy.special import betainc

from bench.diffusion import denoising_loss, generator, sample_noise_and_t, training_scheduler
from bench.training import Amp, optimise
from bench.errors import require
from methods.base import Evidence, Key, WatermarkMethod
from bench.features import capture_output, replace_output, unet_units


def cosine_tail(tau: float, dim: int) -> float:
    """P(cos(u, v) > tau) for a fixed v and u uniform on the unit sphere in `dim` dimensions (tau >= 0)."""
    return 0.5 * float(betainc((dim - 1) / 2, 0.5, 1 - tau * tau))


def cosine_threshold(p0: float, dim: int) -> float:
    """The tau >= 0 with P(cos > tau) = p0 (p0 < 1/2) for a uniform direction in `dim` dimensions."""
    return float(brentq(lambda tau: cosine_tail(tau, dim) - p0, 0.0, 1.0, xtol=1e-12))


_LAZY_CACHE: dict = {}


def probe_ranking(world, unet, data, steps: int, lr: float, batch_size: int,
                  gen: torch.Generator) -> list[tuple[str, float]]:
    """AIAO's probe: fine-tune `unet` (a trainable copy; it is changed) on `data` for `steps` steps and rank
    its units by relative weight change ||delta theta|| / ||theta||, least-moving ("lazy") first."""
    before = {n: [p.detach().clone() for p in m.parameters()] for n, m in unet_units(unet)}
    sched = training_scheduler(world.pipe)

    def loss(_step: int) -> torch.Tensor:
        latents, emb = data.batch(torch.randint(0, len(data), (batch_size,), generator=gen))
        noise, t = sample_noise_and_t(latents, sched.config.num_train_timesteps, gen)
        return denoising_loss(unet, sched, latents, noise, t, emb)

    optimise(unet.parameters(), loss, steps, lr, desc="aiao probe fine-tune", amp=Amp.of(world))
    ranking = []
    for name, module in unet_units(unet):
        num = sum(float((p.detach() - p0).float().pow(2).sum()) for p, p0 in zip(module.parameters(), before[name]))
        den = sum(float(p0.float().pow(2).sum()) for p0 in before[name])
        ranking.append((name, (num / den) ** 0.5 if den > 0 else float("inf")))
    ranking.sort(key=lambda item: item[1])
    return ranking


class AIAO(WatermarkMethod):
    """Sub-path trigger-response watermark in lazy layers (white-box, verification rate)."""

    name = "aiao"
    access = "white-box"
    version = "1"
    key_tensors = ("mask.*", "pattern.*", "target.*")
    key_meta = ("paths", "tau", "per_query_fpr")
    rules = ("lazy_units",)  # public: the marked units are those a probe fine-tune finds least-moving (attacks.lazy_ft)

    def __init__(self, n_paths: int = 16, lazy_fraction: float = 0.5, max_span: int = 4, probe_steps: int = 50,
                 probe_lr: float = 1e-4, probe_batch_size: int = 8, mask_density: float = 0.1,
                 pattern_scale: float = 3.0, steps: int = 300, lr: float = 1e-3, batch_size: int = 8,
                 paths_per_step: int = 2, denoise_weight: float = 1.0, response_weight: float = 1.0,
                 consistency_weight: float = 1.0, per_query_fpr: float = 1e-3, query_batch: int = 4,
                 t_range: tuple[int, int] = (0, 1000)):
        require(n_paths >= 1, f"method.n_paths must be at least 1 (got {n_paths}).")
        require(0 < lazy_fraction <= 1, f"method.lazy_fraction must be in (0, 1] (got {lazy_fraction}).")
        require(max_span >= 1, f"method.max_span must be at least 1 (got {max_span}).")
        require(probe_steps >= 1 and steps >= 1, "method.probe_steps and method.steps must be at least 1.")
        require(probe_lr > 0 and lr > 0, "method.probe_lr and method.lr must be positive.")
        require(batch_size >= 1 and probe_batch_size >= 1 and query_batch >= 1,
                "method.batch_size, method.probe_batch_size and method.query_batch must be at least 1.")
        require(0 < mask_density <= 1, f"method.mask_density must be in (0, 1] (got {mask_density}).")
        require(1 <= paths_per_step <= n_paths,
                f"method.paths_per_step must be in [1, n_paths={n_paths}] (got {paths_per_step}).")
        require(min(denoise_weight, response_weight, consistency_weight) >= 0,
                "method.denoise_weight, response_weight and consistency_weight must be non-negative.")
        require(0 < per_query_fpr < 0.5, f"method.per_query_fpr must be in (0, 0.5) (got {per_query_fpr}).")
        lo, hi = t_range
        require(0 <= lo < hi, f"method.t_range must be [lo, hi) with 0 <= lo < hi (got {list(t_range)}).")
        self.n_paths, self.lazy_fraction, self.max_span = n_paths, lazy_fraction, max_span
        self.probe_steps, self.probe_lr, self.probe_batch_size = probe_steps, probe_lr, probe_batch_size
        self.mask_density, self.pattern_scale = mask_density, pattern_scale
        self.steps, self.lr, self.batch_size, self.paths_per_step = steps, lr, batch_size, paths_per_step
        self.weights = (denoise_weight, response_weight, consistency_weight)
        self.per_query_fpr, self.query_batch, self.t_range = per_query_fpr, query_batch, (int(lo), int(hi))

    # ---- lazy layers -------------------------------------------------------------------------
    def lazy_ranking(self, world) -> list[tuple[str, float]]:
        """(unit name, relative weight change in the probe fine-tune), least-moving first."""
        memo = (world.address, world.training, self.probe_steps, self.probe_lr, self.probe_batch_size)
        if memo not in _LAZY_CACHE:
            _LAZY_CACHE[memo] = probe_ranking(world, world.fresh_unet(), world.encoded("owner"), self.probe_steps,
                                              self.probe_lr, self.probe_batch_size,
                                              generator("aiao-probe", world.address))
        return _LAZY_CACHE[memo]

    # ---- key ---------------------------------------------------------------------------------
    def make_key(self, seed: int, world) -> Key:
        units = [n for n, _ in unet_units(world.unet)]
        ranking = self.lazy_ranking(world)
        n_lazy = max(1, round(self.lazy_fraction * len(ranking)))
        lazy = sorted({units.index(n) for n, _ in ranking[:n_lazy]})
        ends = [j for j in lazy if j > 0]
        require(bool(ends), "AIAO found no lazy unit with a unit before it; raise method.lazy_fraction.")
        features = self._unit_features(world, units)
        gen = generator(seed, "aiao-key")
        key = Key(meta={"units": units, "lazy": [units[j] for j in lazy], "paths": [], "tau": [],
                        "per_query_fpr": self.per_query_fpr, "query_batch": self.query_batch,
                        "t_range": list(self.t_range)})
        for k in range(self.n_paths):
            j = ends[int(torch.randint(0, len(ends), (1,), generator=gen))]
            lo = max(0, j - self.max_span)
            i = lo + int(torch.randint(0, j - lo, (1,), generator=gen))
            f_i, f_j = features[units[i]], features[units[j]]
            mask = (torch.rand(f_i.shape[1:], generator=gen) < self.mask_density).float()
            pattern = self.pattern_scale * float(f_i.float().std()) * torch.randn(f_i.shape[1:], generator=gen)
            target = torch.randn(f_j.shape[1:], generator=gen)
            key.tensors.update({f"mask.{k}": mask, f"pattern.{k}": pattern, f"target.{k}": target / target.norm()})
            key.meta["paths"].append([units[i], units[j]])
            key.meta["tau"].append(cosine_threshold(self.per_query_fpr, target.numel()))
        return key

    @torch.no_grad()
    def _unit_features(self, world, units: list[str]) -> dict[str, torch.Tensor]:
        """Every unit's output on a few owner inputs through the base model (shapes and scales)."""
        store: dict = {}
        modules = dict(unet_units(world.unet))
        latents, emb = world.encoded("owner").batch(range(min(8, len(world.encoded("owner")))))
        sched = training_scheduler(world.pipe)
        noise, t = sample_noise_and_t(latents, sched.config.num_train_timesteps, generator("aiao-shapes"))
        self._forward_capturing(world.unet, modules, units, store, sched.add_noise(latents, noise, t), t, emb)
        return {n: v.detach().cpu() for n, v in store.items()}

    # ---- responses ---------------------------------------------------------------------------
    def _trigger(self, key: Key, k: int, like: torch.Tensor):
        m = key.tensors[f"mask.{k}"].to(like.device, like.dtype)
        p = key.tensors[f"pattern.{k}"].to(like.device, like.dtype)
        return lambda f: (1 - m) * f + m * p

    def responses(self, unet, key: Key, paths: list[int], noisy, t, emb, clean_store: dict | None = None):
        """{k: r_k} with r_k = mean over the batch of f_j(triggered) - f_j(clean) for sub-path k.

        If `clean_store` already holds the clean outputs (by unit name), the clean pass is skipped."""
        modules = dict(unet_units(unet))
        if clean_store is None:
            clean_store = {}
            self._forward_capturing(unet, modules, {key.meta["paths"][k][1] for k in paths}, clean_store,
                                    noisy, t, emb)
        out = {}
        for k in paths:
            src, dst = key.meta["paths"][k]
            store: dict = {}
            with replace_output(modules[src], self._trigger(key, k, noisy)), capture_output(modules[dst], store):
                unet(noisy, t, encoder_hidden_states=emb)
            out[k] = (store["out"] - clean_store[dst]).mean(dim=0)
        return out

    @staticmethod
    def _forward_capturing(unet, modules, names, store, noisy, t, emb):
        with ExitStack() as stack:
            for n in names:
                stack.enter_context(capture_output(modules[n], store, n))
            return unet(noisy, t, encoder_hidden_states=emb).sample

    def _inputs(self, world, split: str, n: int, gen: torch.Generator, unet):
        data = world.encoded(split)
        latents, emb = data.batch(torch.randint(0, len(data), (n,), generator=gen))
        sched = training_scheduler(world.pipe)
        noise, t = sample_noise_and_t(latents, sched.config.num_train_timesteps, gen, self.t_range)
        dtype = next(unet.parameters()).dtype
        return sched, latents, noise, t, emb.to(dtype), sched.add_noise(latents, noise, t).to(dtype)

    # ---- the three methods -------------------------------------------------------------------
    def embed(self, world, key: Key, log_every: int = 0):
        unet = world.fresh_unet().requires_grad_(False)
        modules = dict(unet_units(unet))
        units = key.meta["units"]
        lazy = set(key.meta["lazy"])
        trainable = set()
        for src, dst in key.meta["paths"]:
            trainable |= {n for n in units[units.index(src) + 1: units.index(dst) + 1] if n in lazy}
        for name in trainable:
            modules[name].requires_grad_(True)
        key.meta["trained_units"] = sorted(trainable, key=units.index)
        gen = generator(key.meta.get("seed", 0), "aiao-embed")
        w_denoise, w_response, w_consistency = self.weights

        def loss_fn(_step: int) -> torch.Tensor:
            sched, latents, noise, t, emb, noisy = self._inputs(world, "owner", self.batch_size, gen, unet)
            paths = torch.randperm(self.n_paths, generator=gen)[: self.paths_per_step].tolist()
            clean: dict = {}
            eps = self._forward_capturing(unet, modules, {key.meta["paths"][k][1] for k in paths}, clean,
                                          noisy, t, emb)
            loss = w_denoise * F.mse_loss(eps, noise)
            if w_consistency > 0:
                with torch.no_grad():
                    base_dtype = world.unet.dtype
                    eps_base = world.unet(noisy.to(base_dtype), t, encoder_hidden_states=emb.to(base_dtype)).sample.float()
                loss = loss + w_consistency * F.mse_loss(eps, eps_base)
            resp = self.responses(unet, key, paths, noisy, t, emb, clean_store=clean)
            cos = torch.stack([F.cosine_similarity(resp[k].flatten(), key.tensors[f"target.{k}"].flatten(), dim=0)
                               for k in paths])
            return loss + w_response * (1 - cos).mean()

        optimise(unet.parameters(), loss_fn, self.steps, self.lr, desc="embed aiao", amp=Amp.of(world))
        return unet.requires_grad_(False).eval()

    @torch.no_grad()
    def scores(self, world, unet, key: Key, paths: list[int], seed: int) -> torch.Tensor:
        """cos(r_k, T_k) for each sub-path k, each on its own fresh hold-out inputs (from `seed`)."""
        out = []
        for q, k in enumerate(paths):
            _, _, _, t, emb, noisy = self._inputs(world, "holdout", self.query_batch, generator(seed, "aiao-query", q),
                                                  unet)
            r = self.responses(unet, key, [k], noisy, t, emb)[k]
            out.append(F.cosine_similarity(r.float().flatten(), key.tensors[f"target.{k}"].to(r.device).flatten(),
                                           dim=0).cpu())
        return torch.stack(out)

    def verify(self, world, unet, key: Key, n_queries: int, seed: int) -> Evidence:
        n_paths = len(key.meta["paths"])
        paths = torch.randperm(n_paths, generator=generator(seed, "aiao-mc"))[: min(n_queries, n_paths)].tolist()
        s = self.scores(world, unet, key, paths, seed)
        tau = torch.tensor([key.meta["tau"][k] for k in paths])
        return Evidence("scores", matches=s > tau, scores=s, null_match_prob=key.meta["per_query_fpr"])

    def forge(self, world, unet, key: Key, n_queries: int, seed: int) -> Key:
        """The forger's sub-paths and triggers (their own key) kept, each target direction T_k replaced by the
        suspect's own normalised response r_k to that trigger, read white-box on the forger's inputs (`seed`)."""
        forged = Key(dict(key.tensors), dict(key.meta))
        for k in range(len(key.meta["paths"])):
            _, _, _, t, emb, noisy = self._inputs(world, "holdout", self.query_batch, generator(seed, "aiao-forge", k),
                                                  unet)
            with torch.no_grad():
                r = self.responses(unet, key, [k], noisy, t, emb)[k].float().cpu()
            forged.tensors[f"target.{k}"] = (r / r.norm().clamp_min(1e-12)).to(key.tensors[f"target.{k}"].dtype)
        return forged

    def watermark_loss(self, world, unet, key: Key, seed: int) -> torch.Tensor:
        paths = list(range(min(8, len(key.meta["paths"]))))
        return (1 - self.scores(world, unet, key, paths, seed)).mean()
