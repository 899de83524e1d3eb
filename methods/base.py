"""What every watermarking method implements, and the key and evidence it exchanges.

A method embeds a watermark into a copy of the world's UNet under an owner's secret key,
verifies a suspect pipeline by returning per-query evidence, and exposes its watermark loss
(used by the LMC barrier). Turning evidence into bit accuracy, p-values and verdicts is the
harness's job (`bench.stats`), so all methods are judged by the same statistics.

The contract (`WatermarkMethod`) is everything the harness calls or reads: the abstract methods
`make_key`, `embed`, `verify` and `watermark_loss`, and class attributes that say what the method is
(`verifiable`, `changes_model`, `key_from_embedding`, `access`, `trigger_form`, `rules`) and what its
verifier reads from a key (`key_tensors`, `key_meta`). The harness asks these, never a method's name.
tests/test_contract.py checks every `conf/method/*.yaml` against it.
"""
from __future__ import annotations

import json
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Literal

import torch
from safetensors.torch import load_file, save_file

from bench.errors import ConfigError



@dataclass
class Key:
    """The owner's secret: tensors (bits, target patterns, extractor weights...) and JSON metadata."""

    tensors: dict[str, torch.Tensor] = field(default_factory=dict)
    meta: dict = field(default_factory=dict)

    def save(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous().cpu() for k, v in self.tensors.items()} or {"_empty": torch.zeros(0)},
                  str(folder / "key.safetensors"))
        (folder / "key_meta.json").write_text(json.dumps(self.meta, indent=1, sort_keys=True))

    @classmethod
    def load(cls, folder: Path) -> "Key":
        """The key in `folder`; a damaged or edited one (unreadable safetensors, metadata that is not a JSON object
        or over the size limit) is one paragraph (ConfigError)."""
        from bench.errors import ConfigError
        from bench.untrusted import read_json
        try:
            tensors = {k: v for k, v in load_file(str(folder / "key.safetensors")).items() if k != "_empty"}
        except Exception as err:  # safetensors raises several types for corrupt files
            raise ConfigError(f"The key in '{folder}' is unreadable ({err}); the key folder is damaged.") from None
        meta = read_json(folder / "key_meta.json", "The key's metadata", "The key folder is damaged.")
        if not isinstance(meta, dict):
            raise ConfigError(f"The key's metadata '{folder / 'key_meta.json'}' is a JSON {type(meta).__name__}, not "
                              "an object; the key folder is damaged or was edited.")
        return cls(tensors, meta)


@dataclass
class Evidence:
    """Per-query verification evidence.

    kind "bits": `decoded` (n_queries, n_bits) in {0, 1} and the owner's `bits` (n_bits,).
    kind "scores": `matches` (n_queries,) booleans (a query's response matched the key),
    `scores` (n_queries,) the raw similarity, and `null_match_prob`, the probability that one
    query matches on a model that never saw the key (the method derives it from how its key is
    drawn); the model-level test is a binomial test of the match count against it. With
    `null_overdispersion` rho (a method calibrated on null models whose per-query rates differ from
    model to model), the count's null is beta-binomial with mean `null_match_prob` and intra-model
    correlation rho instead (alpha = p (1 - rho) / rho, beta = (1 - p) (1 - rho) / rho).
    """

    kind: Literal["bits", "scores"]
    decoded: torch.Tensor | None = None
    bits: torch.Tensor | None = None
    matches: torch.Tensor | None = None
    scores: torch.Tensor | None = None
    null_match_prob: float | None = None
    null_overdispersion: float | None = None


@dataclass(frozen=True)
class MethodCard:
    """What an attacker may know about a method (Kerckhoffs): its name, how it verifies, the public form
    of its trigger, and its public hyperparameters (the YAML). Never the key: no bits, patterns, masks,
    sub-paths, hold-out inputs or trained extractors, which are drawn from the owner's seed."""

    name: str
    access: str
    trigger_form: str | None
    settings: dict
    # the public rules the method follows (`WatermarkMethod.rules`), which an adaptive attack may apply itself
    rules: tuple[str, ...] = ()

    def as_dict(self) -> dict:
        """The card as it enters an attack's cache address. `rules` is left out: it follows from the method (the
        name and settings already in the address), and leaving it out keeps every address as it was."""
        return {"name": self.name, "access": self.access, "trigger_form": self.trigger_form, "settings": self.settings}

    def follows(self, rule: str) -> dict:
        """The public settings, if the method follows `rule` (e.g. "lazy_units": AIAO's probe ranks the units it
        marks); {} if it does not, so an attack falls back on its own defaults."""
        return dict(self.settings) if rule in self.rules else {}


class WatermarkMethod(ABC):
    """Base class: the contract between a method and the harness. Subclasses set `name` and `version` (and the
    class attributes below that differ from the defaults) and implement the four abstract methods."""

    name: ClassVar[str] = "base"
    access: ClassVar[Literal["black-box", "white-box", "none"]] = "black-box"
    version: ClassVar[str] = "1"
    # False for "no watermark": nothing to verify, so no verdicts (the verification collector returns nothing,
    # bench.tools.verify / roc / fpr refuse or skip it)
    verifiable: ClassVar[bool] = True
    # False for "no watermark": the marked model is the base model itself (no embedding is stored)
    changes_model: ClassVar[bool] = True
    # The public form of a text trigger: "prompt" (a whole rare-token prompt, WatermarkDM's [V]),
    # "prefix" (prepended to any caption, SleeperMark's *[Z]& ) or None (no text trigger)
    trigger_form: ClassVar[str | None] = None
    # True when `embed` completes the key (e.g. trains a decoder into it): a key from `make_key`
    # alone cannot verify, so false-positive measurements (bench.tools.fpr) embed each key.
    key_from_embedding: ClassVar[bool] = False
    # What `verify` reads from a key: tensor names ("x.*": at least one tensor under "x.") and metadata keys.
    # bench.tools.verify refuses a key that lacks any of them (`key_lacks`), e.g. another method's key.
    key_tensors: ClassVar[tuple[str, ...]] = ()
    key_meta: ClassVar[tuple[str, ...]] = ()
    # Public rules the method follows that an adaptive attack may apply itself (on the card: `MethodCard.follows`),
    # e.g. "lazy_units" (AIAO marks the units a probe fine-tune finds least-moving) or "expressive_block"
    # (ActiveMark injects at the block found by massive activations)
    rules: ClassVar[tuple[str, ...]] = ()

    def card(self, settings: dict) -> MethodCard:
        """The public description an adaptive attack may read (`settings`: the method's resolved config)."""
        public = {k: v for k, v in settings.items() if k not in ("_target_", "label")}
        return MethodCard(self.name, self.access, self.trigger_form, public, tuple(self.rules))

    def key_lacks(self, key: Key) -> list[str]:
        """What `verify` reads (`key_tensors`, `key_meta`) that `key` lacks; [] for a key this method can read."""
        def has(name: str) -> bool:
            if name.endswith(".*"):
                return any(k.startswith(name[:-1]) for k in key.tensors)
            return name in key.tensors

        return [t for t in self.key_tensors if not has(t)] + [f"meta '{m}'" for m in self.key_meta if m not in key.meta]

    @abstractmethod
    def make_key(self, seed: int, world) -> Key:
        """Draw the owner's secret from `seed` (the same seed gives the same key)."""

    @abstractmethod
    def embed(self, world, key: Key, log_every: int = 0):
        """Return a watermarked copy of `world`'s UNet (the world itself is not modified)."""

    @abstractmethod
    def verify(self, world, unet, key: Key, n_queries: int, seed: int) -> Evidence | None:
        """Query the suspect model `unet` (in `world`) and return per-query evidence; None if not `verifiable`."""

    def forge(self, world, unet, key: Key, n_queries: int, seed: int) -> Key:
        """A false claim: `key` (the forger's own, honestly made) rewritten after the fact so that it verifies on the
        suspect `unet`, a model the forger did not mark (`bench.tools.dispute`).

        Threat model: the forger knows the method and its public settings, holds keys of their own, and sees the
        suspect the way its verifier does (black-box outputs, or white-box features); `seed` is the forger's query
        seed, never the judge's. The forger never sees the owner's key. A key committed before the suspect existed
        (`bench.commitment`) cannot be rewritten, which is what commitment buys.

        The default suits bit marks ("bits" evidence): the message becomes the majority vote of the bits the
        verifier decodes from the suspect with the forger's own trigger and extractor. Methods with another kind
        of evidence override it with their strongest forger."""
        ev = self.verify(world, unet, key, n_queries, seed)
        if ev is None or ev.kind != "bits":
            raise ConfigError(f"method {self.name} has no forger for its '{getattr(ev, 'kind', None)}' evidence.")
        forged = Key(dict(key.tensors), dict(key.meta))
        forged.tensors["bits"] = (ev.decoded.float().mean(0) >= 0.5).to(key.tensors["bits"].dtype)
        return forged

    @abstractmethod
    def watermark_loss(self, world, unet, key: Key, seed: int) -> torch.Tensor | None:
        """The loss the embedding minimises, on a batch fixed by `seed` (common random numbers); None if not
        `verifiable`."""
