"""ActiveMark (Chistyakova & Pautov, arXiv 2510.04966), ported from vision transformers to the denoiser.

The original marks a vision foundation model; its mechanism (the first author's ExpressPrint
tool) is applied here to the UNet's transformer blocks (`bench.features.transformer_blocks`,
forward order):

* The **expressive block** is found by massive activations: for each transformer block, the mean
  of the top-5 absolute values of its output, per hold-out input, averaged over the hold-out
  inputs through the base model. It is the first block whose value is at least `jump_factor` x
  the previous block's (a sharp jump); when no block jumps, the block with the largest increase
  (ExpressPrint's own rule). `block: <index>` forces one. The last block cannot be chosen.
* An **encoder** MLP([token; message] -> hidden -> D) reads the expressive block's input at a
  secret token and overwrites that token of its output (see `MessageEncoder` for the port's
  linear message code).
* A **decoder** MLP(D -> hidden -> n_bits logits) reads the output of the last transformer block
  at the token covering the injected token's place (the grids differ in resolution; at equal
  resolution it is the same token index). ExpressPrint reads the input of the ViT's last block,
  i.e. the output of the last trained block; here the last block is trained and read.
* **Trained**: every parameter of the transformer blocks after the expressive one (the
  BasicTransformerBlocks only: not the resnets, samplers or the attention modules' norm/proj_in/
  proj_out), at `lr`; the encoder and decoder at `wm_lr_factor` x `lr` (ExpressPrint: 10 x).
* **Loss**: `keep_weight` * MSE(eps of the marked UNet, eps of the frozen base) on clean owner
  data without injection + BCE(decoded, message) on hold-out inputs with injection, a fresh
  random message per input and step (ExpressPrint) + `null_weight` * [BCE(decoded, 1/2) - ln 2]
  on the frozen base model's features with the same injection (port choice: the injected token
  reaches the decoder through the base model's residual and skip connections too, so without
  this term the decoder also reads the message from the unmarked model). The null term runs on
  its own inputs: owner items that no hold-out input uses, with their own noise and timesteps,
  never the hold-out inputs that verification queries, so the base model checked at verification
  time is not the exact input the null term trained on (version 2; version 1 used the hold-out
  inputs, which made the base-model false-positive check in-sample).
* **Hold-out inputs**: `n_holdout` (noisy owner latent, timestep in `t_range`, prompt embedding)
  triples drawn from the key's seed, stored in the key with one random message ("bits") each.

Verification (white-box): hook the owner's encoder and decoder into the suspect UNet, send each
hold-out input's message, and count inputs decoded with at most `max_bit_errors` bit errors. A bit
whose decoded probability lies within `margin` of 1/2 counts as an error (port choice; margin 0 is
ExpressPrint's plain threshold). A query matches by chance with at most
p0 = P(Binomial(n_bits, 1/2) >= n_bits - max_bit_errors), exact when the decoded bits do not
depend on the (uniform) message; the null models' empirical false-positive rate is the real check.

**Cross-key calibration (version 3).** That bound is wrong on one kind of null: a model marked by
*another* owner. Its trained blocks carry an injected token to the read place whatever encoder
wrote it, so this owner's encoder and decoder pass through it too (tiny world, version 2: 6 of 28
cross-key verifications detected, a per-query match rate of 0.071 against p0 0.0021), and how
much varies from pair to pair (0 to 28 of 64 queries). `query_p0` and `query_rho` replace the
binomial null by a beta-binomial one fitted (maximum likelihood) to the match counts of keys on
models marked with other keys, on calibration seeds disjoint from the reported ones
(`scripts/calibrate_activemark.py`): mean per-query rate query_p0, intra-model correlation
query_rho. The verifier uses the larger of p0 and query_p0, and the key stores both, so the
threshold is fixed (and committed) with the key. It is a null calibrated on models, stated as
such, not a proof: its tail beyond the calibration models is the fitted family's, and a new world
needs its own calibration.
"""
from __future__ import annotations

import logging
import math
from contextlib import ExitStack, contextmanager

import torch
import torch.nn.functional as F
from scipy.stats import binom
from torch import nn

from bench.diffusion import derive_seed, generator, sample_noise_and_t, training_scheduler
from bench.errors import ConfigError, require
from bench.training import Amp, optimise
from methods.base import Evidence, Key, WatermarkMethod
from bench.features import capture_input, capture_output, replace_output, transformer_blocks

log = logging.getLogger(__name__)


class MessageEncoder(nn.Module):
    """[token feature; message signs] -> hidden -> the new token, plus a linear code of the message.

    ExpressPrint's encoder is the MLP alone, with a sigmoid output. Port choice: the output is
    linear and a linear map of the message signs (+-1), initialised with standard deviation `gain`
    per output feature, is added. At initialisation the MLP's output barely depends on the message,
    and the UNet's frozen layers between blocks attenuate it further, so at CPU budgets the
    encoder/decoder pair never starts to learn; the code gives the decoder a signal from step one.
    """

    def __init__(self, dim: int, n_bits: int, hidden: int, gain: float):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(dim + n_bits, hidden), nn.Linear(hidden, dim)
        self.code = nn.Linear(n_bits, dim, bias=False)
        nn.init.normal_(self.code.weight, std=gain / n_bits ** 0.5)

    def forward(self, feature: torch.Tensor, message: torch.Tensor) -> torch.Tensor:
        signs = message * 2 - 1
        return self.fc2(torch.relu(self.fc1(torch.cat([feature, signs], dim=-1)))) + self.code(signs)


class MessageDecoder(nn.Module):
    """Token feature -> hidden -> one logit per message bit (ExpressPrint's decoder, before its sigmoid)."""

    def __init__(self, dim: int, n_bits: int, hidden: int):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(dim, hidden), nn.Linear(hidden, n_bits)

    def forward(self, feature: torch.Tensor) -> torch.Tensor:
        return self.fc2(torch.relu(self.fc1(feature)))


def expressive_block(values: list[float], jump_factor: float, last: int) -> int:
    """The first block i in 1..last with values[i] >= jump_factor * values[i - 1] (a sharp jump in the
    top-5 activation means); when none qualifies, the i in 1..last with the largest increase
    values[i] - values[i - 1] (ExpressPrint's rule). 0 when last < 1."""
    if last < 1:
        return 0
    for i in range(1, last + 1):
        if values[i] >= jump_factor * values[i - 1]:
            return i
    return max(range(1, last + 1), key=lambda i: values[i] - values[i - 1])


@torch.no_grad()
def activation_profile(unet, x, t, emb, chunk: int = 8):
    """Per transformer block (forward order): the mean of the top-5 absolute values of its output, per
    input, averaged over the inputs (ExpressPrint's statistic); the output's root mean square; and
    its (tokens, dim). Returns the three lists."""
    blocks = transformer_blocks(unet)
    p = next(unet.parameters())
    tops, squares, shapes = [0.0] * len(blocks), [0.0] * len(blocks), [(0, 0)] * len(blocks)
    for i in range(0, len(x), chunk):
        store: dict = {}
        with ExitStack() as stack:
            for j, (_, b) in enumerate(blocks):
                stack.enter_context(capture_output(b, store, j))
            unet(x[i:i + chunk].to(p.device, p.dtype), t[i:i + chunk].to(p.device),
                 encoder_hidden_states=emb[i:i + chunk].to(p.device, p.dtype))
        for j in range(len(blocks)):
            feat = store[j].float()
            tops[j] += float(feat.abs().flatten(1).topk(5, dim=1).values.mean(dim=1).sum())
            squares[j] += float(feat.square().mean(dim=(1, 2)).sum())
            shapes[j] = tuple(feat.shape[1:])
    return [v / len(x) for v in tops], [(v / len(x)) ** 0.5 for v in squares], shapes


def null_match_prob(n_bits: int, max_bit_errors: int) -> float:
    """P(Binomial(n_bits, 1/2) >= n_bits - max_bit_errors): a uniformly random bit string is within
    max_bit_errors of a fixed one."""
    return float(binom.cdf(max_bit_errors, n_bits, 0.5))


def bit_errors(logits: torch.Tensor, bits: torch.Tensor, margin: float) -> torch.Tensor:
    """Errors per row: bits decoded wrong, or with probability within `margin` of 1/2 (undecided)."""
    prob = torch.sigmoid(logits.float())
    decided = (prob - 0.5).abs() > margin
    return (~decided | ((prob > 0.5).long() != bits.long())).sum(dim=1)


def _grid(n_tokens: int, h: int, w: int) -> list[int]:
    """The [rows, cols] of a block's token grid, for latents of size h x w."""
    scale = round((h * w / n_tokens) ** 0.5)
    return [h // scale, w // scale]


def _same_place(token: int, grid: list[int], other: list[int]) -> int:
    """The token of grid `other` that covers the centre of `token` on grid `grid`."""
    row, col = divmod(token, grid[1])
    return int((row + 0.5) * other[0] / grid[0]) * other[1] + int((col + 0.5) * other[1] / grid[1])


class ActiveMark(WatermarkMethod):
    """A message channel from the expressive block to the last transformer block (white-box, scores)."""

    name = "activemark"
    access = "white-box"
    version = "3"  # 2: the null term on its own inputs, disjoint from the hold-out inputs; 3: query_p0 in the key
    key_from_embedding = True  # embed trains the encoder and decoder stored in the key
    key_tensors = ("holdout_x", "holdout_t", "holdout_emb", "bits", "encoder.*", "decoder.*")
    key_meta = ("n_bits", "margin", "max_bit_errors", "block", "read_block", "dims", "hidden", "query_p0", "query_rho")
    rules = ("expressive_block",)  # public: the message enters at the massive-activation block (attacks.expressive_ft)

    def __init__(self, n_bits: int = 32, max_bit_errors: int = 4, margin: float = 0.25, block: int | None = None,
                 jump_factor: float = 2.0, n_holdout: int = 64, t_range=(0, 1000), enc_hidden: int = 1024,
                 dec_hidden: int = 512, inject_scale: float = 10.0, steps: int = 2500, lr: float = 1e-5,
                 wm_lr_factor: float = 10.0, batch_size: int = 16, keep_weight: float = 1.0, null_weight: float = 1.0,
                 null_ramp: float = 0.5, query_p0: float | None = None, query_rho: float | None = None):
        require(n_bits >= 8, f"method.n_bits must be at least 8 (got {n_bits}); the paper uses 32.")
        require(0 <= max_bit_errors < n_bits / 4, f"method.max_bit_errors must be in [0, n_bits/4) (got "
                f"{max_bit_errors} for {n_bits} bits); more errors make chance matches likely.")
        require(0 <= margin < 0.5, f"method.margin must be in [0, 0.5) (got {margin}); 0 thresholds at 1/2.")
        require(block is None or (isinstance(block, int) and block >= 0),
                f"method.block must be null (automatic) or a transformer block index >= 0 (got {block}).")
        require(jump_factor > 1, f"method.jump_factor must be above 1 (got {jump_factor}); 2 means 'doubles'.")
        require(n_holdout >= 1, f"method.n_holdout must be at least 1 (got {n_holdout}).")
        require(len(t_range) == 2 and 0 <= t_range[0] < t_range[1],
                f"method.t_range must be [low, high) with 0 <= low < high (got {list(t_range)}).")
        require(enc_hidden >= 1 and dec_hidden >= 1, "method.enc_hidden and method.dec_hidden must be positive.")
        require(inject_scale >= 0, f"method.inject_scale must be >= 0 (got {inject_scale}).")
        require(steps >= 1, f"method.steps must be at least 1 (got {steps}).")
        require(lr > 0 and wm_lr_factor > 0, f"method.lr and method.wm_lr_factor must be positive (got {lr}, "
                f"{wm_lr_factor}); the paper uses lr 1e-5 and factor 10.")
        require(batch_size >= 1, f"method.batch_size must be at least 1 (got {batch_size}).")
        require(keep_weight >= 0 and null_weight >= 0, "method.keep_weight and method.null_weight must be >= 0.")
        require(0 <= null_ramp <= 1, f"method.null_ramp must be a fraction of the steps in [0, 1] (got {null_ramp}).")
        require(query_p0 is None or 0 < query_p0 < 1, f"method.query_p0 must be null (the binomial bound) or a "
                f"per-query null match rate in (0, 1) (got {query_p0}); scripts/calibrate_activemark.py measures it.")
        require(query_rho is None or (query_p0 is not None and 0 < query_rho < 1),
                f"method.query_rho must be null or in (0, 1) with query_p0 set (got {query_rho}, query_p0 {query_p0}).")
        self.n_bits, self.max_bit_errors, self.margin, self.query_p0 = n_bits, max_bit_errors, margin, query_p0
        self.query_rho = query_rho
        self.block, self.jump_factor, self.n_holdout = block, jump_factor, n_holdout
        self.t_range = [int(t_range[0]), int(t_range[1])]
        self.enc_hidden, self.dec_hidden, self.inject_scale = enc_hidden, dec_hidden, inject_scale
        self.steps, self.lr, self.wm_lr_factor, self.batch_size = steps, lr, wm_lr_factor, batch_size
        self.keep_weight, self.null_weight, self.null_ramp = keep_weight, null_weight, null_ramp

    # ------------------------------------------------------------------ key
    def make_key(self, seed: int, world) -> Key:
        """Hold-out inputs and their messages from `seed`; the expressive block from the base model."""
        sched = training_scheduler(world.pipe)
        n_train = sched.config.num_train_timesteps
        require(self.t_range[1] <= n_train, f"method.t_range {self.t_range} exceeds the scheduler's {n_train} "
                "timesteps.")
        owner = world.encoded("owner")
        gen = generator(seed, "activemark-holdout")
        items = torch.randint(0, len(owner), (self.n_holdout,), generator=gen)
        latents, emb = owner.batch(items)
        noise, t = sample_noise_and_t(latents, n_train, gen, tuple(self.t_range))
        x = sched.add_noise(latents, noise, t)
        bits = torch.randint(0, 2, (self.n_holdout, self.n_bits), generator=generator(seed, "activemark-bits"))

        names = [n for n, _ in transformer_blocks(world.unet)]
        if len(names) < 2:
            raise ConfigError(f"ActiveMark needs at least 2 transformer blocks in the UNet (found {len(names)}).")
        top5, rms, shapes = activation_profile(world.unet, x, t, emb)
        last = len(names) - 2  # at least one trained block after the expressive one
        if self.block is not None and self.block > last:
            raise ConfigError(f"method.block={self.block} is out of range: this UNet's transformer blocks are "
                              f"{list(enumerate(names))}; the block must be at most {last} (a later block is "
                              "trained and the last one is read).")
        block = expressive_block(top5, self.jump_factor, last) if self.block is None else self.block
        read = len(names) - 1
        grid, read_grid = _grid(shapes[block][0], *x.shape[-2:]), _grid(shapes[read][0], *x.shape[-2:])
        token = int(torch.randint(0, shapes[block][0], (1,), generator=generator(seed, "activemark-token")))
        meta = {"seed": seed, "n_bits": self.n_bits, "max_bit_errors": self.max_bit_errors, "margin": self.margin,
                "block": block, "block_name": names[block], "read_block": read, "read_block_name": names[read],
                "token": token, "read_token": _same_place(token, grid, read_grid), "grid": grid,
                "read_grid": read_grid, "dims": [shapes[block][1], shapes[read][1]],
                "hidden": [self.enc_hidden, self.dec_hidden], "inject_gain": self.inject_scale * rms[block],
                "holdout_items": sorted(set(items.tolist())), "query_p0": self.query_p0,
                "query_rho": self.query_rho,
                "top5_profile": top5}
        log.info("activemark: expressive block %d (%s), top-5 profile %s", block, names[block],
                 [round(v, 3) for v in top5])
        return Key({"holdout_x": x.cpu(), "holdout_t": t.cpu(), "holdout_emb": emb.cpu(), "bits": bits}, meta)

    # ------------------------------------------------------------------ wiring
    def _mlps(self, meta: dict, device) -> tuple[MessageEncoder, MessageDecoder]:
        """Freshly initialised encoder and decoder, drawn from the key's seed."""
        (d_enc, d_dec), (h_enc, h_dec) = meta["dims"], meta["hidden"]
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(derive_seed(meta["seed"], "activemark-mlps"))
            enc = MessageEncoder(d_enc, meta["n_bits"], h_enc, meta["inject_gain"])
            dec = MessageDecoder(d_dec, meta["n_bits"], h_dec)
        return enc.to(device), dec.to(device)

    def _owner_mlps(self, key: Key, device) -> tuple[MessageEncoder, MessageDecoder]:
        """The trained encoder and decoder stored in the key."""
        enc, dec = self._mlps(key.meta, device)
        for prefix, mlp in (("encoder.", enc), ("decoder.", dec)):
            mlp.load_state_dict({k[len(prefix):]: v for k, v in key.tensors.items() if k.startswith(prefix)})
        return enc.requires_grad_(False).eval(), dec.requires_grad_(False).eval()

    @contextmanager
    def wired(self, unet, meta: dict, enc: MessageEncoder, messages: torch.Tensor):
        """While active, a forward pass of `unet` injects `messages` (B, n_bits) at the expressive block's
        secret token; afterwards the yielded dict holds the read token's feature (B, D) under "read"."""
        blocks = transformer_blocks(unet)
        names = [n for n, _ in blocks]
        if len(names) <= meta["read_block"] or (names[meta["block"]], names[meta["read_block"]]) != (
                meta["block_name"], meta["read_block_name"]):
            raise ConfigError(f"The suspect UNet's transformer blocks do not match the key's ({meta['block_name']}, "
                              f"{meta['read_block_name']}); ActiveMark verifies models of the marked architecture.")
        block, read = blocks[meta["block"]][1], blocks[meta["read_block"]][1]
        store: dict = {}
        index = torch.tensor([meta["token"]])

        def inject(out: torch.Tensor) -> torch.Tensor:
            token = enc(store["in"][:, meta["token"]].float(), messages.float().to(out.device))
            return out.index_copy(1, index.to(out.device), token[:, None].to(out.dtype))

        with capture_input(block, store, "in"), replace_output(block, inject), capture_output(read, store, "out"):
            yield store
        if "out" in store:
            store["read"] = store["out"][:, meta["read_token"]].float()

    def _logits(self, unet, meta, enc, dec, x, t, emb, messages) -> torch.Tensor:
        """Decoder logits (B, n_bits) for hold-out inputs (x, t, emb) carrying `messages` through `unet`."""
        p = next(unet.parameters())
        with self.wired(unet, meta, enc, messages) as store:
            unet(x.to(p.device, p.dtype), t.to(p.device), encoder_hidden_states=emb.to(p.device, p.dtype))
        return dec(store["read"])

    # ------------------------------------------------------------------ embed
    def embed(self, world, key: Key, log_every: int = 0):
        meta, device = key.meta, world.device
        unet = world.fresh_unet().requires_grad_(False)
        base = world.unet if world.unet.dtype == torch.float32 else world.fresh_unet().requires_grad_(False)
        trained = [b for _, b in transformer_blocks(unet)[meta["block"] + 1:]]
        for b in trained:
            b.requires_grad_(True)
        enc, dec = self._mlps(meta, device)
        model_params = [p for b in trained for p in b.parameters()]
        mlp_params = [*enc.parameters(), *dec.parameters()]
        amp = Amp.of(world)
        opt = amp.make_optimizer([{"params": model_params, "lr": self.lr},  # weight decay: torch AdamW's default
                                  {"params": mlp_params, "lr": self.lr * self.wm_lr_factor}], self.lr, weight_decay=1e-2)
        sched = training_scheduler(world.pipe)
        owner, gen = world.encoded("owner"), generator(meta["seed"], "activemark-embed")
        x, t, emb = (key.tensors[k] for k in ("holdout_x", "holdout_t", "holdout_emb"))
        nx, nt, nemb = self._null_inputs(world, meta)
        half = torch.full((self.batch_size, self.n_bits), 0.5, device=device)
        ramp_steps = max(1.0, self.null_ramp * self.steps)  # the null weight grows linearly over these steps

        def loss_fn(step: int) -> torch.Tensor:
            clean, clean_emb = (v.float() for v in owner.batch(torch.randint(0, len(owner), (self.batch_size,),
                                                                               generator=gen)))
            noise, tc = sample_noise_and_t(clean, sched.config.num_train_timesteps, gen)
            noisy = sched.add_noise(clean, noise, tc)
            with torch.no_grad():
                target = base(noisy, tc, encoder_hidden_states=clean_emb).sample.float()
            keep = F.mse_loss(unet(noisy, tc, encoder_hidden_states=clean_emb).sample.float(), target)
            idx = torch.randint(0, len(x), (self.batch_size,), generator=gen)
            msg = torch.randint(0, 2, (self.batch_size, self.n_bits), generator=gen).float().to(device)
            logits = self._logits(unet, meta, enc, dec, x[idx], t[idx], emb[idx], msg)
            message = F.binary_cross_entropy_with_logits(logits, msg)
            null, null_weight = torch.zeros((), device=device), self.null_weight * min(1.0, step / ramp_steps)
            if null_weight > 0:  # BCE to 1/2 less its floor ln 2: the KL from "no information"
                jdx = torch.randint(0, len(nx), (self.batch_size,), generator=gen)
                null_logits = self._logits(base, meta, enc, dec, nx[jdx], nt[jdx], nemb[jdx], msg)
                null = F.binary_cross_entropy_with_logits(null_logits, half) - math.log(2)
            if log_every and step % log_every == 0:
                log.info("activemark step %d: keep %.2e, message %.4f (bit acc %.3f), null %.4f", step, float(keep),
                         float(message), float(((logits > 0) == (msg > 0.5)).float().mean()), float(null))
            return self.keep_weight * keep + message + null_weight * null

        def step_fn(step: int, params, _opt) -> torch.Tensor:  # our own AdamW: two learning rates
            opt.zero_grad(set_to_none=True)
            with amp.autocast():
                loss = loss_fn(step)
            amp.backward(loss)
            amp.step(opt, params, 1.0)
            return loss.detach()

        optimise(model_params + mlp_params, loss_fn, self.steps, self.lr, desc="embed activemark", step_fn=step_fn,
                 amp=amp)
        key.tensors.update({f"encoder.{k}": v.detach().cpu() for k, v in enc.state_dict().items()})
        key.tensors.update({f"decoder.{k}": v.detach().cpu() for k, v in dec.state_dict().items()})
        return unet.requires_grad_(False).eval()

    def _null_inputs(self, world, meta: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The null term's inputs: `n_holdout` noisy owner items that no hold-out input uses (own noise and
        timesteps), so verification never queries what the null term trained on."""
        owner, sched = world.encoded("owner"), training_scheduler(world.pipe)
        pool = torch.tensor(sorted(set(range(len(owner))) - set(meta.get("holdout_items", []))))
        gen = generator(meta["seed"], "activemark-null-inputs")
        latents, emb = owner.batch(pool[torch.randint(0, len(pool), (self.n_holdout,), generator=gen)])
        noise, t = sample_noise_and_t(latents, sched.config.num_train_timesteps, gen, tuple(self.t_range))
        return sched.add_noise(latents, noise, t), t, emb

    # ------------------------------------------------------------------ verify
    @torch.no_grad()
    def decode(self, unet, key: Key, n: int, chunk: int = 16) -> torch.Tensor:
        """Decoder logits (n, n_bits) for the first n hold-out inputs and their messages, through `unet`."""
        enc, dec = self._owner_mlps(key, next(unet.parameters()).device)
        x, t, emb, bits = (key.tensors[k][:n] for k in ("holdout_x", "holdout_t", "holdout_emb", "bits"))
        return torch.cat([self._logits(unet, key.meta, enc, dec, x[i:i + chunk], t[i:i + chunk], emb[i:i + chunk],
                                       bits[i:i + chunk]).cpu() for i in range(0, n, chunk)])

    def verify(self, world, unet, key: Key, n_queries: int, seed: int) -> Evidence:
        n = min(n_queries, len(key.tensors["bits"]))  # capped at the stored hold-out inputs
        meta = key.meta
        errors = bit_errors(self.decode(unet, key, n), key.tensors["bits"][:n], meta["margin"])
        p0, q, rho = null_match_prob(meta["n_bits"], meta["max_bit_errors"]), meta["query_p0"], meta["query_rho"]
        for name, v in (("query_p0", q), ("query_rho", rho)):
            require(v is None or (isinstance(v, (int, float)) and not isinstance(v, bool) and 0 < v < 1),
                    f"The key's {name} is {v!r}: it must be null or a number in (0, 1). The key's metadata was edited or "
                    "damaged; verify with the owner's key as it was committed.")
        return Evidence("scores", matches=errors <= meta["max_bit_errors"], scores=1 - errors.float() / meta["n_bits"],
                        null_match_prob=max(p0, q or 0.0), null_overdispersion=rho)

    def forge(self, world, unet, key: Key, n_queries: int, seed: int, rounds: int = 4, gain: float = 20.0) -> Key:
        """The forger's hold-out inputs and encoder kept; each input's message replaced by what the forger's decoder
        reads from the suspect with that message injected, repeated `rounds` times (a fixed point: on a model whose
        output barely depends on the message the decoded bits are the model's own), and the decoder's last layer
        scaled by `gain` so that no bit falls within the margin. A forger's key without a trained encoder and
        decoder (`make_key` alone) gets freshly initialised ones."""
        forged = Key(dict(key.tensors), dict(key.meta))
        if not any(k.startswith("decoder.") for k in forged.tensors):
            enc, dec = self._mlps(forged.meta, "cpu")
            forged.tensors.update({f"encoder.{k}": v.detach() for k, v in enc.state_dict().items()})
            forged.tensors.update({f"decoder.{k}": v.detach() for k, v in dec.state_dict().items()})
        last = max(k for k in forged.tensors if k.startswith("decoder.") and k.endswith(".weight"))
        for name in (last, last[:-len("weight")] + "bias"):
            if name in forged.tensors:
                forged.tensors[name] = forged.tensors[name] * gain
        n = len(forged.tensors["bits"])
        for _ in range(rounds):
            bits = (self.decode(unet, forged, n) > 0).to(forged.tensors["bits"].dtype)
            if torch.equal(bits, forged.tensors["bits"]):
                break
            forged.tensors["bits"] = bits
        return forged

    def watermark_loss(self, world, unet, key: Key, seed: int) -> torch.Tensor:
        """Message BCE on the first 16 hold-out inputs and their messages (fixed by the key: common to all models)."""
        n = min(16, len(key.tensors["bits"]))
        return F.binary_cross_entropy_with_logits(self.decode(unet, key, n), key.tensors["bits"][:n].float())
