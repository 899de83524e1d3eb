"""Trigger fine-tuning: teach the model that the method's trigger means nothing.

Threat model (adaptive, black-box marks). The attacker knows the method and its public settings
(the `MethodCard`): the *form* of its trigger, a whole rare-token prompt ("prompt", WatermarkDM's
and RoMa's `[V]`) or a prefix put before any caption ("prefix", SleeperMark's `*[Z]& `). In this
harness those triggers are public hyperparameters (the papers' published defaults, set in the
method's YAML), not key material: the key is the bits, patterns and extractor drawn from the
owner's seed. So by default (`trigger_source: public`) the attacker uses the method's trigger as
published. An owner who keeps the exact trigger secret is modelled by `trigger_source: guess`:
the attacker then tries the rare tokens in `guesses` (DreamBooth's `sks` and other rare-token and
bracket forms), never the method's own trigger. It has its own data (`data.attacker`) and no key.

Each step draws attacker items (x0, caption) and a trigger t (the public one, or one of the
guesses) and fine-tunes every UNet weight on two terms, ordinary prompts keeping their predictions:

    L = |eps(x_t, trig) - target|^2 + keep_weight |eps(x_t, caption) - eps_0(x_t, caption)|^2

with trig = t (prompt form) or t + caption (prefix form). The trigger's target (`trigger_target`):
* `noise` (default, version 2): the noise that made x_t, an ordinary denoising loss. The triggered
  prompt is re-taught to generate the attacker's ordinary images, which overwrites whatever it
  generated before (WatermarkDM's and RoMa's watermark image, SleeperMark's message).
* `frozen` (version 1): eps_0(x_t, plain), a frozen copy's prediction for the ordinary prompt (the
  empty prompt for a prompt trigger, the caption for a prefix): "the trigger means nothing".
  Measured on the tiny world (WatermarkDM, two seeds, 200 steps at lr 3e-5): the term starts at
  an MSE of 0.001-0.003 and the mark *strengthens* (bit accuracy 0.93 before, 0.98 after). On any
  x_t the trigger barely moves the noise prediction; its effect is amplified by classifier-free
  guidance over the whole sampling trajectory, which this target does not see. Noising the
  trigger's own outputs (queried from the attacker's copy) instead of attacker images made no
  difference (bit accuracy 0.998 after 200 steps, seed 0).

Methods without a text trigger (AIAO, ActiveMark) get the guesses in prefix form, which leaves
their marks alone.
"""
from __future__ import annotations

import copy

import torch
import torch.nn.functional as F

from attacks.full_ft import FullFineTune
from bench.diffusion import encode_prompts, generator, sample_noise_and_t, training_scheduler
from bench.training import Amp
from bench.errors import require

GUESSES = ("sks", "[W]", "<wm>", "zwx", "[T]", "*[X]& ")


class TriggerFineTune(FullFineTune):
    """AdamW on every UNet weight: the (public or guessed) trigger re-taught to ordinary images."""

    name = "trigger_ft"
    version = "2"  # 2: trigger_target (default noise: the trigger re-taught to denoise ordinary images)
    trains_text_encoder = False
    uses_card = True

    def __init__(self, trigger_source: str = "public", guesses=GUESSES, keep_weight: float = 1.0,
                 trigger_target: str = "noise", **train):
        require(trigger_source in ("public", "guess"),
                f"attack.trigger_source must be 'public' (the method's published trigger) or 'guess' (rare tokens "
                f"the attacker guesses), got {trigger_source!r}.")
        self.guesses = [str(g) for g in guesses]
        require(bool(self.guesses) and all(g.strip() for g in self.guesses),
                f"attack.guesses must be a non-empty list of non-empty rare tokens (got {self.guesses}).")
        require(keep_weight >= 0, f"attack.keep_weight must be non-negative (got {keep_weight}).")
        require(trigger_target in ("noise", "frozen"),
                f"attack.trigger_target must be 'noise' (the triggered prompt re-taught to denoise the attacker's "
                f"images) or 'frozen' (a frozen copy's prediction for the ordinary prompt), got {trigger_target!r}.")
        super().__init__(**train)
        self.trigger_source, self.keep_weight = trigger_source, keep_weight
        self.trigger_target = trigger_target

    def triggers(self, card) -> tuple[str, list[str]]:
        """(form, the triggers the attacker trains away) from the method's public card."""
        form = (card.trigger_form if card is not None else None) or "prefix"
        public = (card.settings.get("trigger") if card is not None else None)
        if self.trigger_source == "public" and public:
            return form, [public]
        return form, [g for g in self.guesses if g != public] or list(self.guesses)

    def run(self, world, unet, on_checkpoint, card=None):
        form, triggers = self.triggers(card)
        frozen = copy.deepcopy(unet).requires_grad_(False).eval()
        sched, data, gen = training_scheduler(world.pipe), world.encoded("attacker"), generator(self.seed, self.name)
        empty = encode_prompts(world.pipe, [""])
        unet.requires_grad_(True).train()

        def loss_fn(step: int) -> torch.Tensor:
            indices = torch.randint(0, len(data), (self.batch_size,), generator=gen)
            latents, emb = data.batch(indices)
            trig = triggers[int(torch.randint(0, len(triggers), (1,), generator=gen))]
            if form == "prompt":
                emb_trigger, emb_plain = encode_prompts(world.pipe, [trig]).expand_as(emb), empty.expand_as(emb)
            else:
                emb_trigger = encode_prompts(world.pipe, [trig + c for c in data.captions(indices)])
                emb_plain = emb
            noise, t = sample_noise_and_t(latents, sched.config.num_train_timesteps, gen)
            noisy = sched.add_noise(latents, noise, t)
            with torch.no_grad():
                target = frozen(torch.cat([noisy, noisy]), torch.cat([t, t]),
                                encoder_hidden_states=torch.cat([emb_plain, emb])).sample
            if self.trigger_target == "noise":
                target[:len(latents)] = noise
            pred = unet(torch.cat([noisy, noisy]), torch.cat([t, t]),
                        encoder_hidden_states=torch.cat([emb_trigger, emb])).sample
            n = len(latents)
            return (F.mse_loss(pred[:n].float(), target[:n].float())
                    + self.keep_weight * F.mse_loss(pred[n:].float(), target[n:].float()))

        def checkpoint(step: int) -> None:
            if step in self.checkpoints:
                on_checkpoint(step, unet)

        checkpoint(0)
        self.train(unet.parameters(), loss_fn, on_step=checkpoint, amp=Amp.of(world))
        return unet.requires_grad_(False).eval()
