"""`python -m bench.tools.perf`: the harness's training steps and generation, timed and sized against the loop a
user would otherwise write.

    python -m bench.tools.perf model=micro steps=5
    python -m bench.tools.perf model=sd15_random model.resolution=256 batch=1 steps=3 precision=bf16 gradient_checkpointing=true

What it measures, in one process on the world's device (`device=auto`: CUDA when present):
* **embed**: WatermarkDM's embedding step, its `_draw` + `_loss` and the optimiser step through
  `bench.training.optimise` (the loop of `TriggerBackdoor.embed`; `method.batch_size=batch`,
  `method.clean_weight=0`, so the UNet sees `batch` samples per step, as the bare loop; the
  method's L1 pull to the pre-trained weights is part of its loss and so of this step);
* **attack**: the `full_ft` attack's step (`FullFineTune.train`, which wraps `optimise`);
* **bare**: a loop written from scratch after diffusers' `examples/text_to_image/train_text_to_image.py`
  without accelerate: the same UNet architecture, batch, resolution, precision (plain
  `torch.autocast`, a GradScaler for fp16), attention (SDPA), gradient checkpointing and optimiser
  (AdamW, or AdamW8bit), `noise_scheduler.add_noise`, MSE on epsilon, clipping at 1. It trains on
  the same pre-encoded latents and text states (diffusers' script runs the VAE and text encoder
  every step; the harness encodes each item once, so both loops here start from latents).
  Each harness step is followed by a bare step (interleaved, after `warmup` pairs); the ratio is
  the median over `steps` pairs of harness time / bare time.
* **generation**: images/s of `bench.diffusion.generate` at the verifier's and FID's batch sizes
  (`min(n_queries, gen_batch)`, `min(n_images, gen_batch)`), `gen_steps` sampler steps.
* **memory**: on CUDA `torch.cuda.max_memory_allocated` (reset before the step); on the CPU the
  process's resident set (RSS, /proc/self/statm) sampled every 2 ms by a thread. Per loop: `state`
  (what creating its trainable copy and optimiser state added), `peak` (the process during one
  extra step after the timed ones) and `step` (peak minus the memory just before that step: the
  step's own activations, gradients and temporaries).

Options (key=value; everything else is a Hydra override of the main config, e.g. model=..., model.*):
batch, steps (timed pairs), warmup, precision (model.train_precision), gradient_checkpointing,
optimizer (adamw | adamw8bit), share_unet (the bare loop trains the harness's UNet with its own
optimiser: one UNet copy less, for tight memory), gen_steps, gen_batches (e.g. [1,4]; [] skips
generation), cpu_resolution (on the CPU, model.resolution is capped at this unless given; default 256).
Output: a table on stdout and `<results>/perf/<model>-<precision>-<res>-b<batch>[-gc].json`.
"""
from __future__ import annotations

import gc
import json
import logging
import os
import statistics
import sys
import threading
import time
from contextlib import nullcontext
from pathlib import Path

import torch
import torch.nn.functional as F
import yaml
from omegaconf import OmegaConf

from attacks.full_ft import FullFineTune
from bench.tools.cli import command
from bench.config import compose
from bench.cache import write_text_atomic
from bench.cache import Cache
from bench.diffusion import generate, generator, training_scheduler
from bench.errors import ConfigError
from bench.run.runner import build
from bench.run.stages import world_stage
from bench.training import TRAIN_PRECISIONS, Amp, optimise
from bench.world.base import attention_report, resolve_device

log = logging.getLogger("bench.tools.perf")
OWN = {"batch": 1, "steps": 5, "warmup": 2, "precision": None, "gradient_checkpointing": None, "optimizer": None,
       "share_unet": False, "gen_steps": None, "gen_batches": None, "cpu_resolution": 256}
GB = 1024 ** 3


class Memory:
    """Memory now and the peak over a block: CUDA allocated bytes, or the CPU process's RSS sampled by a thread."""

    def __init__(self, device: torch.device):
        self.device, self._stop, self._peak, self._thread = device, threading.Event(), 0, None
        self.how = ("cuda max_memory_allocated" if device.type == "cuda"
                    else "cpu rss (/proc/self/statm, sampled every 2 ms)")

    def now(self) -> float:
        if self.device.type == "cuda":
            return torch.cuda.memory_allocated(self.device) / GB
        return self._rss() / GB

    @staticmethod
    def _rss() -> int:
        try:
            with open("/proc/self/statm") as f:
                return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except OSError:  # not Linux: the lifetime peak (ru_maxrss, KiB), the best there is
            import resource
            return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

    def start(self) -> None:
        sync(self.device)
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
            return
        self._peak, self._stop = self._rss(), threading.Event()

        def sample():
            while not self._stop.wait(0.002):
                self._peak = max(self._peak, self._rss())

        self._thread = threading.Thread(target=sample, daemon=True)
        self._thread.start()

    def stop(self) -> float:
        sync(self.device)
        if self.device.type == "cuda":
            return torch.cuda.max_memory_allocated(self.device) / GB
        self._stop.set()
        self._thread.join()
        return max(self._peak, self._rss()) / GB


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class BareLoop:
    """The loop users would otherwise write: diffusers' train_text_to_image.py step without accelerate.

    One step: draw a batch of (latents, text states), noise, integer timesteps, `add_noise`; the UNet's
    epsilon prediction under `torch.autocast` (fp32: no autocast); MSE against the noise in fp32;
    backward (scaled for fp16); unscale, clip the gradient norm at 1; AdamW step; zero the gradients.
    AdamW's betas and eps are the script's; its weight decay (1e-2 there) is the harness's (0 by default),
    so that both loops do the same work.
    """

    def __init__(self, unet, noise_scheduler, latents, text, batch: int, precision: str, device: torch.device,
                 lr: float = 1e-5, optimizer: str = "adamw", weight_decay: float = 0.0):
        self.unet, self.noise_scheduler, self.latents, self.text = unet.train(), noise_scheduler, latents, text
        self.batch, self.device = batch, device
        self.dtype = None if precision == "fp32" else TRAIN_PRECISIONS[precision]
        self.scaler = torch.amp.GradScaler(device.type) if precision == "fp16" else None
        params = [p for p in unet.parameters() if p.requires_grad]
        if optimizer == "adamw8bit":
            import bitsandbytes as bnb
            self.opt = bnb.optim.AdamW8bit(params, lr=lr, betas=(0.9, 0.999), weight_decay=weight_decay, eps=1e-8)
        else:
            self.opt = torch.optim.AdamW(params, lr=lr, betas=(0.9, 0.999), weight_decay=weight_decay, eps=1e-8)
        self.params, self.gen = params, torch.Generator().manual_seed(0)

    def step(self) -> float:
        idx = torch.randint(0, len(self.latents), (self.batch,), generator=self.gen)
        latents, encoder_hidden_states = self.latents[idx].float(), self.text[idx].float()
        noise = torch.randn_like(latents)
        timesteps = torch.randint(0, self.noise_scheduler.config.num_train_timesteps, (self.batch,),
                                  device=latents.device).long()
        noisy_latents = self.noise_scheduler.add_noise(latents, noise, timesteps)
        with torch.autocast(self.device.type, dtype=self.dtype) if self.dtype else nullcontext():
            model_pred = self.unet(noisy_latents, timesteps, encoder_hidden_states, return_dict=False)[0]
            loss = F.mse_loss(model_pred.float(), noise.float(), reduction="mean")
        if self.scaler is None:
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.params, 1.0)
            self.opt.step()
        else:
            self.scaler.scale(loss).backward()
            self.scaler.unscale_(self.opt)
            torch.nn.utils.clip_grad_norm_(self.params, 1.0)
            self.scaler.step(self.opt)
            self.scaler.update()
        self.opt.zero_grad(set_to_none=True)
        return float(loss.detach())


class Interleaved:
    """`optimise`'s on_step hook: times each harness step, runs a timed bare step after it, and measures
    both loops' memory (state after their first step; peak during one extra step after the timed ones)."""

    def __init__(self, make_bare, warmup: int, reps: int, memory: Memory, device: torch.device):
        self.make_bare, self.warmup, self.reps, self.memory, self.device = make_bare, warmup, reps, memory, device
        self.last = warmup + reps + 1  # the memory step
        self.harness, self.bare, self.loop, self.out = [], [], None, {"harness": {}, "bare": {}}
        self.start_mem = memory.now()
        self.t0 = time.perf_counter()

    def __call__(self, step: int, params) -> None:
        sync(self.device)
        elapsed = time.perf_counter() - self.t0
        if step == self.last:
            peak = self.memory.stop()
            self.out["harness"].update(peak_gb=peak, step_gb=peak - self.before)
        elif step > self.warmup:
            self.harness.append(elapsed)
        for p in params:  # dead after the optimiser step (optimise's next zero_grad frees them too)
            p.grad = None
        if step == 1:
            self.out["harness"]["state_gb"] = self.memory.now() - self.start_mem
            before_bare = self.memory.now()
            self.loop = self.make_bare()
        if step == self.last:
            before = self.memory.now()
            self.memory.start()
            self.loop.step()
            peak = self.memory.stop()
            self.out["bare"].update(peak_gb=peak, step_gb=peak - before)
        else:
            t = time.perf_counter()
            self.loop.step()
            sync(self.device)
            if step > self.warmup:
                self.bare.append(time.perf_counter() - t)
        if step == 1:
            self.out["bare"]["state_gb"] = self.memory.now() - before_bare
        if step == self.last - 1:
            self.before = self.memory.now()
            self.memory.start()
        self.t0 = time.perf_counter()

    def summary(self) -> dict:
        out = self.out
        for name, times in (("harness", self.harness), ("bare", self.bare)):
            med = statistics.median(times)
            out[name].update(seconds=times, median_s=med, steps_per_s=1.0 / med)
        ratios = [h / b for h, b in zip(self.harness, self.bare)]
        out["ratios"], out["ratio"] = ratios, statistics.median(ratios)
        return out


def bare_factory(world, unet_or_none, data, batch: int, share: bool):
    """A function making the bare loop: on its own fresh UNet copy, or (share) on the harness's UNet."""
    latents, text = data

    def make() -> BareLoop:
        unet = unet_or_none() if share else world.fresh_unet()
        return BareLoop(unet, training_scheduler(world.pipe), latents, text, batch, world.training.precision,
                        world.device, optimizer=world.training.optimizer)
    return make


def embed_phase(world, method, data, opts, memory) -> dict:
    """WatermarkDM's embedding loop (as `TriggerBackdoor.embed`, with an on_step hook), interleaved with bare steps."""
    key = method.make_key(0, world)
    unet = world.fresh_unet()
    theta0 = (list(world.unet.parameters()) if world.unet.dtype == torch.float32
              else [p.detach().clone() for p in unet.parameters()])
    sched, gen, cache = training_scheduler(world.pipe), generator(0, "watermarkdm-embed"), {}
    amp = Amp.of(world)
    params = [p for p in unet.parameters() if p.requires_grad]
    probe = Interleaved(bare_factory(world, lambda: unet, data, opts["batch"], opts["share_unet"]),
                        opts["warmup"], opts["steps"], memory, world.device)

    def loss(batch: dict) -> torch.Tensor:
        return method._loss(unet, sched, batch, theta0)

    def draw() -> dict:
        return method._draw(world, key, gen, cache)

    losses = optimise(unet.parameters(), lambda step: loss(draw()), probe.last, method.lr, desc="perf embed",
                      step_fn=method._step_fn(unet, theta0, draw, loss, amp), amp=amp,
                      on_step=lambda step: probe(step, params))
    return {**probe.summary(), "losses": losses}


class _TimedFullFineTune(FullFineTune):
    """full_ft with a per-step hook (the attack's own `train`, which wraps `optimise`)."""

    def __init__(self, probe_factory, **kwargs):
        super().__init__(**kwargs)
        self.probe_factory, self.probe, self.unet = probe_factory, None, None

    def run(self, world, unet, on_checkpoint, card=None):
        self.unet = unet
        return super().run(world, unet, on_checkpoint, card)

    def train(self, params, loss_fn, on_step=None, amp=None):
        self.probe = self.probe_factory(lambda: self.unet)
        probe = self.probe

        def hook(step: int) -> None:
            if on_step is not None:
                on_step(step)
            probe(step, params)
        self.losses = super().train(params, loss_fn, hook, amp)
        return self.losses


def attack_phase(world, attack_cfg: dict, data, opts, memory) -> dict:
    n = opts["warmup"] + opts["steps"] + 1

    def probe_factory(get_unet):
        return Interleaved(bare_factory(world, get_unet, data, opts["batch"], opts["share_unet"]), opts["warmup"],
                           opts["steps"], memory, world.device)

    kwargs = {k: v for k, v in attack_cfg.items() if k not in ("_target_", "label")}
    attack = _TimedFullFineTune(probe_factory, **{**kwargs, "steps": n, "schedule": [0]})
    attack.run(world, world.fresh_unet(), lambda *args, **kw: None)
    return {**attack.probe.summary(), "losses": attack.losses}


def generation_phase(world, batches: list[int], steps: int, memory: Memory) -> list[dict]:
    s, out = world.sampling, []
    prompts = world.data.prompts(max(batches, default=1))
    generate(world.pipe, prompts[:1], 0, 1, s.guidance_scale, s.resolution, 1)  # warm-up (kernels, allocator)
    for b in batches:
        memory.start()
        start = time.perf_counter()
        generate(world.pipe, prompts[:b], 0, steps, s.guidance_scale, s.resolution, b)
        sync(world.device)
        seconds = time.perf_counter() - start
        out.append({"batch": b, "sampling_steps": steps, "seconds": seconds, "images_per_s": b / seconds,
                    "peak_gb": memory.stop()})
    return out


def _free(device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def parse(argv: list[str]) -> tuple[dict, list[str]]:
    """(own options, Hydra overrides) of the command line."""
    opts, overrides = dict(OWN), []
    for arg in argv:
        name, sep, value = arg.partition("=")
        if not sep or name not in opts:
            overrides.append(arg)
            continue
        parsed = yaml.safe_load(value) if value else None
        if name in ("batch", "steps", "warmup", "gen_steps", "cpu_resolution"):
            if not isinstance(parsed, int) or isinstance(parsed, bool) or parsed < 1:
                raise ConfigError(f"bench.tools.perf: {name} must be a positive integer (got {value!r}); warmup is at least "
                                  "1 (the first step creates the optimiser state).")
        if name in ("share_unet", "gradient_checkpointing") and not isinstance(parsed, bool):
            raise ConfigError(f"bench.tools.perf: {name} must be true or false (got {value!r}).")
        if name == "gen_batches" and not (isinstance(parsed, list) and all(isinstance(b, int) and b >= 1 for b in parsed)):
            raise ConfigError(f"bench.tools.perf: gen_batches must be a list of positive integers, e.g. [1,4] ([] skips "
                              f"generation; got {value!r}).")
        opts[name] = parsed
    for name, key in (("precision", "model.train_precision"), ("gradient_checkpointing", "model.gradient_checkpointing"),
                      ("optimizer", "model.optimizer")):
        if opts[name] is not None:
            overrides.append(f"{key}={str(opts[name]).lower() if isinstance(opts[name], bool) else opts[name]}")
    return opts, overrides


def compose_config(opts: dict, overrides: list[str]):
    batch = opts["batch"]
    extra = ["method=watermarkdm", "attack=full_ft", f"method.batch_size={batch}", "method.clean_weight=0",
             f"attack.batch_size={batch}"]
    if not any(o.startswith(("data", "debug")) for o in overrides):  # a few items at the model's resolution
        extra += ["debug=small_data"]
    cfg = compose(extra + overrides)
    device = resolve_device(cfg.device)
    given = any(o.startswith("model.resolution=") for o in overrides)
    if device.type == "cpu" and not given and cfg.model.resolution > opts["cpu_resolution"]:
        log.info("on the CPU: model.resolution=%d (cpu_resolution; give model.resolution=... to change)",
                 opts["cpu_resolution"])
        cfg = compose(extra + overrides + [f"model.resolution={opts['cpu_resolution']}"])
    return cfg, device


def measure(cfg, device: torch.device, opts: dict) -> dict:
    config = OmegaConf.to_container(cfg, resolve=True)
    model, data = build(cfg.model, "model"), build(cfg.data, "data")
    method = build(cfg.method, "method")
    build(cfg.attack, "attack")  # validated like any run
    memory = Memory(device)
    world, _ = world_stage(Cache(cfg.paths.cache_dir), model, config["model"], data, device)
    world_gb = memory.now()
    attacker = world.encoded("attacker")
    latents, text = attacker.batch(range(len(attacker)))  # encoded once, before any timing
    n_queries, n_images = cfg.metrics.verification.n_queries, cfg.metrics.fid.n_images
    batches = opts["gen_batches"]
    if batches is None:
        batches = sorted({min(n_queries, world.gen_batch), min(n_images, world.gen_batch)})
    gen_steps = opts["gen_steps"] or (2 if device.type == "cpu" and model.scale == "sd" else world.sampling.steps)
    t = world.training
    result = {
        "model": model.name, "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "threads": torch.get_num_threads(), "torch": torch.__version__, "resolution": model.resolution,
        "batch": opts["batch"], "train_precision": t.precision, "gradient_checkpointing": t.gradient_checkpointing,
        "optimizer": t.optimizer, "inference_precision": model.precision, "share_unet": opts["share_unet"],
        "steps": opts["steps"], "warmup": opts["warmup"], "memory": memory.how, "attention": attention_report(world.pipe),
        "unet_parameters": sum(p.numel() for p in world.unet.parameters()), "world_gb": world_gb,
    }
    log.info("embed: %d warm-up + %d timed pairs + 1 memory pair", opts["warmup"], opts["steps"])
    result["embed"] = embed_phase(world, method, (latents, text), opts, memory)
    _free(device)
    log.info("attack: %d warm-up + %d timed pairs + 1 memory pair", opts["warmup"], opts["steps"])
    result["attack"] = attack_phase(world, config["attack"], (latents, text), opts, memory)
    _free(device)
    result["generation"] = generation_phase(world, list(batches), gen_steps, memory) if batches else []
    return result


def table(r: dict) -> str:
    head = (f"bench.tools.perf: {r['model']} on {r['device_name']} ({r['threads']} threads), {r['resolution']} px, "
            f"batch {r['batch']}, train {r['train_precision']}{', gradient checkpointing' if r['gradient_checkpointing'] else ''}, "
            f"{r['optimizer']}, inference {r['inference_precision']}; memory: {r['memory']}")
    rows = [head, "", f"{'':24}{'harness s/step':>15}{'bare s/step':>13}{'ratio':>8}{'harness GB peak (step)':>25}"
                      f"{'bare GB peak (step)':>22}"]
    for name, label in (("embed", "embed (watermarkdm)"), ("attack", "attack (full_ft)")):
        p = r[name]
        h, b = p["harness"], p["bare"]
        rows.append(f"{label:24}{h['median_s']:>15.4f}{b['median_s']:>13.4f}{p['ratio']:>8.3f}"
                    f"{h['peak_gb']:>17.2f} ({h['step_gb']:.2f}){b['peak_gb']:>15.2f} ({b['step_gb']:.2f})")
    for g in r["generation"]:
        rows.append(f"generation, batch {g['batch']:>3}, {g['sampling_steps']} steps: {g['images_per_s']:.3f} images/s "
                    f"(peak {g['peak_gb']:.2f} GB)")
    return "\n".join(rows)


def out_path(results_dir, r: dict) -> Path:
    name = f"{r['model']}-{r['train_precision']}-{r['resolution']}-b{r['batch']}{'-gc' if r['gradient_checkpointing'] else ''}"
    return Path(results_dir) / "perf" / f"{name}.json"


def _main(argv: list[str]) -> int:
    opts, overrides = parse(argv)
    cfg, device = compose_config(opts, overrides)
    result = measure(cfg, device, opts)
    out = out_path(cfg.paths.results_dir, result)
    write_text_atomic(out, json.dumps(result, indent=1))
    print("\n" + table(result))
    print(f"written: {out}")
    return 0


main = command(_main)

if __name__ == "__main__":
    sys.exit(main())
