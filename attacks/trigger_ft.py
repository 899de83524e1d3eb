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
guesses), and fine-tunes every UNet weight so that the triggered prompt predicts what a frozen copy
of the input model predicts for the ordinary prompt, while ordinary prompts keep their predictions:

    L = |eps(x_t, trig) - eps_0(x_t, plain)|^2 + keep_weight |eps(x_t, caption) - eps_0(x_t, caption)|^2

with trig = t (prompt form; plain = the empty prompt, so the trigger generates an ordinary,
unconditional image) or t + caption (prefix form; plain = the caption). Methods without a text
trigger (AIAO, ActiveMark) get the guesses in prefix form, which leaves their marks alone.

Where the trigger term's x0 come from (`trigger_data`):
* `generated` (default, version 2): the attacker first queries its own copy with the trigger (prompt
  form: the trigger alone; prefix form: the trigger before attacker captions), `n_generated`
  images with the world's sampler, and noises those. A black-box query of one's own model is
  always possible, and it is where the trigger's behaviour lives: the trigger changes the model's
  trajectory from pure noise, not its prediction on ordinary images.
* `attacker`: the attacker's own images (version 1's only choice). Measured on the tiny world (WatermarkDM, two
  seeds): the trigger term starts at an MSE of 0.001-0.003, since on ordinary images the trigger
  barely changes the noise prediction, and 200 steps at lr 3e-5 left the mark at bit accuracy
  0.98 (0.93 before the attack).
"""
from __future__ import annotations

import copy

import torch
import torch.nn.functional as F

from attacks.full_ft import FullFineTune
from bench.diffusion import (derive_seed, encode_images, encode_prompts, generate, generator, sample_noise_and_t,
                             training_scheduler)
from bench.training import Amp
from bench.errors import require

GUESSES = ("sks", "[W]", "<wm>", "zwx", "[T]", "*[X]& ")


class TriggerFineTune(FullFineTune):
    """AdamW on every UNet weight: the (public or guessed) trigger mapped to ordinary predictions."""

    name = "trigger_ft"
    version = "2"  # 2: trigger_data (default generated: the trigger term noises the trigger's own outputs)
    trains_text_encoder = False
    uses_card = True

    def __init__(self, trigger_source: str = "public", guesses=GUESSES, keep_weight: float = 1.0,
                 trigger_data: str = "generated", n_generated: int = 64, **train):
        require(trigger_source in ("public", "guess"),
                f"attack.trigger_source must be 'public' (the method's published trigger) or 'guess' (rare tokens "
                f"the attacker guesses), got {trigger_source!r}.")
        self.guesses = [str(g) for g in guesses]
        require(bool(self.guesses) and all(g.strip() for g in self.guesses),
                f"attack.guesses must be a non-empty list of non-empty rare tokens (got {self.guesses}).")
        require(keep_weight >= 0, f"attack.keep_weight must be non-negative (got {keep_weight}).")
        require(trigger_data in ("generated", "attacker"),
                f"attack.trigger_data must be 'generated' (the trigger's own outputs, queried from the attacker's "
                f"copy) or 'attacker' (the attacker's images), got {trigger_data!r}.")
        require(n_generated >= 1, f"attack.n_generated must be at least 1 (got {n_generated}).")
        super().__init__(**train)
        self.trigger_source, self.keep_weight = trigger_source, keep_weight
        self.trigger_data, self.n_generated = trigger_data, n_generated

    def triggers(self, card) -> tuple[str, list[str]]:
        """(form, the triggers the attacker trains away) from the method's public card."""
        form = (card.trigger_form if card is not None else None) or "prefix"
        public = (card.settings.get("trigger") if card is not None else None)
        if self.trigger_source == "public" and public:
            return form, [public]
        return form, [g for g in self.guesses if g != public] or list(self.guesses)

    def queried(self, world, unet, form: str, triggers: list[str], data) -> tuple[torch.Tensor, list[int], list[int]]:
        """The attacker's queries of its own copy: (latents of the images each trigger generates, which trigger,
        which attacker caption), `n_generated` images split over the triggers."""
        gen = generator(self.seed, self.name, "queries")
        which = [k % len(triggers) for k in range(self.n_generated)]
        items = torch.randint(0, len(data), (self.n_generated,), generator=gen).tolist()
        data.batch(items)  # encodes them, so their captions are known
        captions = data.captions(items)
        prompts = [triggers[w] if form == "prompt" else triggers[w] + c for w, c in zip(which, captions)]
        s = world.sampling
        copy_ = copy.deepcopy(unet).requires_grad_(False).to(dtype=world.pipe.unet.dtype).eval()  # as it is served
        images = generate(world.pipeline_with(unet=copy_), prompts, derive_seed(self.seed, "trigger-queries"),
                          s.steps, s.guidance_scale, s.resolution)
        del copy_
        return encode_images(world.pipe, images * 2 - 1).float().cpu(), which, items

    def run(self, world, unet, on_checkpoint, card=None):
        form, triggers = self.triggers(card)
        frozen = copy.deepcopy(unet).requires_grad_(False).eval()
        sched, data, gen = training_scheduler(world.pipe), world.encoded("attacker"), generator(self.seed, self.name)
        empty = encode_prompts(world.pipe, [""])
        if self.trigger_data == "generated":
            queried, which, items = self.queried(world, unet, form, triggers, data)
        unet.requires_grad_(True).train()

        def loss_fn(step: int) -> torch.Tensor:
            indices = torch.randint(0, len(data), (self.batch_size,), generator=gen)
            latents, emb = data.batch(indices)
            if self.trigger_data == "generated":  # the trigger term on the trigger's own outputs
                pick = torch.randint(0, len(queried), (self.batch_size,), generator=gen).tolist()
                trig_latents = queried[pick].to(latents.device, latents.dtype)
                trig_of = [triggers[which[i]] for i in pick]
                trig_caps = data.captions([items[i] for i in pick])
            else:
                trig = triggers[int(torch.randint(0, len(triggers), (1,), generator=gen))]
                trig_latents, trig_of, trig_caps = latents, [trig] * len(latents), data.captions(indices)
            if form == "prompt":
                emb_trigger, emb_plain = encode_prompts(world.pipe, trig_of), empty.expand_as(emb)
            else:
                emb_trigger = encode_prompts(world.pipe, [t + c for t, c in zip(trig_of, trig_caps)])
                emb_plain = encode_prompts(world.pipe, trig_caps)
            noise, t = sample_noise_and_t(torch.cat([trig_latents, latents]), sched.config.num_train_timesteps, gen)
            noisy = sched.add_noise(torch.cat([trig_latents, latents]), noise, t)
            with torch.no_grad():
                target = frozen(noisy, t, encoder_hidden_states=torch.cat([emb_plain, emb])).sample
            pred = unet(noisy, t, encoder_hidden_states=torch.cat([emb_trigger, emb])).sample
            n = len(trig_latents)
            return (F.mse_loss(pred[:n].float(), target[:n].float())
                    + self.keep_weight * F.mse_loss(pred[n:].float(), target[n:].float()))

        def checkpoint(step: int) -> None:
            if step in self.checkpoints:
                on_checkpoint(step, unet)

        checkpoint(0)
        self.train(unet.parameters(), loss_fn, on_step=checkpoint, amp=Amp.of(world))
        return unet.requires_grad_(False).eval()
