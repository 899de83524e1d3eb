"""Attack chains: several attacks, one after the other, each on the previous one's output.

    python -m bench attack=chain attack.links=[permute,lora_ft] -m
    python -m bench attack=chain 'attack.links=[permute,{name:full_ft,steps:200}]' -m

A link is an attack's YAML name (`conf/attack/<name>.yaml`) or a mapping `{name: <name>, <setting>: <value>, ...}`
that overrides that YAML's settings. Each link is composed from its own YAML at the run's model scale and seed
(`${scale:...}` and `${seed}` resolve as they would for `attack=<name>`), and built, so validated, when the chain is:
a bad chain is refused before any work. Link k starts from link k-1's final weights (for a weight edit, a sweep
whose checkpoints each restart from its input, that is its last value's edit: permute's `all`, prune's largest
sparsity...), as if link k-1's last checkpoint were written to a file and attacked anew.

Checkpoints are numbered along the chain: 0 is the unattacked input, then every non-zero checkpoint of link 1, of
link 2, ... renumbered 1, 2, 3, ...; `budget(id)` names the path to it, e.g. `permute:all → lora_ft:step 20` (each
earlier link at its final budget), in units of `budget_label` = "link:budget".

Threat model: the union of its links' (each link's own module docstring states it; `Chain.threat_models()` lists
them). The attacker holds the marked model's weights, and whatever each link uses: its own data
(`world.data.attacker`) for the training links, nothing more for the data-free edits (permute, prune, quantize,
noise), and the method's public card for the adaptive links (the chain `uses_card` when any link does, and passes
the card to those links only). No link ever holds the owner's key.

Identity: the run's config holds the links as written, so a chain's label names every link it was given
(`chain[links=[permute,full_ft]]`); the chain at its YAML's default links is labelled `chain`, and its config says
which. A link's YAML defaults are read when the chain is built, not when the run is planned: they are not part of
the chain's run id or cache address (edit a link's YAML, and a chain that used it must be re-run by hand).
"""
from __future__ import annotations

import inspect
import logging
import sys
from typing import Callable

from omegaconf import DictConfig, ListConfig, OmegaConf

from attacks.base import Attack
from bench.config import CONF, SCALES, compose
from bench.diffusion import unet_state
from bench.errors import BenchError, ConfigError, require

log = logging.getLogger(__name__)

NOT_LINKS = ("none", "chain")  # the identity is no attack to chain; a chain inside a chain is not composed


def attack_names() -> list[str]:
    """The attacks a chain may link: every conf/attack/*.yaml but `none` and `chain`."""
    return sorted(p.stem for p in (CONF / "attack").glob("*.yaml") if p.stem not in NOT_LINKS)


def parse_link(i: int, link) -> tuple[str, dict]:
    """(attack name, overrides) of link `i` as written: a name, or a mapping with `name` and overrides."""
    if isinstance(link, (DictConfig, ListConfig)):
        link = OmegaConf.to_container(link, resolve=True)
    where = f"attack.links[{i}]"
    if isinstance(link, dict):
        overrides = dict(link)
        name = overrides.pop("name", None)
        require(isinstance(name, str), f"{where} is a mapping without a `name` ({link}); write a link as an attack "
                                       f"name (permute) or as {{name: lora_ft, steps: 50}} (the attack and the "
                                       f"settings it overrides).")
    else:
        name, overrides = link, {}
    require(isinstance(name, str), f"{where} is {name!r}, not an attack name; a link is one of {attack_names()} or "
                                   f"a mapping {{name: <one of those>, <setting>: <value>}}.")
    why = {"none": "`none` does nothing, so it is no link (drop it from the list)",
           "chain": "a chain is not a link of another chain (write its links out in one list instead)"}
    require(name not in NOT_LINKS, f"{where} is {name!r}, which is not an attack to chain: {why.get(name)}. Links are "
                                   f"any of {attack_names()}.")
    require(name in attack_names(), f"{where} is {name!r}, which names no attack: conf/attack/ has no {name}.yaml. "
                                    f"Links are any of {attack_names()}.")
    return name, overrides


def link_config(i: int, name: str, overrides: dict, scale: str, seed: int) -> dict:
    """Link `i`'s resolved config: conf/attack/<name>.yaml at `scale` and `seed`, with its overrides applied."""
    node = compose([f"attack={name}", f"model.scale={scale}", f"seed={seed}"]).attack
    config = OmegaConf.to_container(node, resolve=True)
    unknown = sorted(k for k in overrides if k not in config or k == "_target_")
    require(not unknown, f"attack.links[{i}] ({name}) overrides {unknown}, which conf/attack/{name}.yaml does not "
                         f"have; its settings are {sorted(k for k in config if k not in ('_target_', 'label'))}.")
    config.update(overrides)
    config.pop("label", None)  # a display name, not a constructor argument
    return config


def check_numbers(where: str, config: dict) -> None:
    """Refuse a text value where the link's constructor defaults to a number, naming the setting (as the runner
    does for a top-level attack)."""
    from hydra.utils import get_object
    try:
        target = get_object(config["_target_"])
        params = {}  # the constructor's own parameters, and those its **kwargs pass on to its base classes'
        for cls in reversed(inspect.getmro(target) if inspect.isclass(target) else ()):
            if "__init__" in vars(cls):
                params.update(inspect.signature(cls.__init__).parameters)
        if not inspect.isclass(target):
            params = dict(inspect.signature(target).parameters)
    except Exception:  # instantiate refuses it below with its own message
        return
    for key, param in params.items():
        default, value = param.default, config.get(key)
        if key in config and not isinstance(default, bool) and isinstance(default, (int, float)) \
                and isinstance(value, (str, bool)):
            raise ConfigError(f"{where}: attack.{key} must be a number (its default is {default!r}), not {value!r}.")


def build_link(i: int, name: str, config: dict) -> Attack:
    """Instantiate link `i`; its own constructor's refusals come back naming the link."""
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate

    where = f"attack.links[{i}] ({name})"
    check_numbers(where, config)
    try:
        link = instantiate(OmegaConf.create(config), _convert_="all")
    except InstantiationException as err:
        cause = err.__cause__ or err
        if isinstance(cause, BenchError):
            raise ConfigError(f"{where}: {cause}") from None
        raise ConfigError(f"{where} could not be built: {cause}. Check its settings against "
                          f"conf/attack/{name}.yaml.") from None
    require(isinstance(link, Attack), f"{where}: conf/attack/{name}.yaml builds {type(link).__name__}, not an attack.")
    return link


def threat_model(attack: Attack) -> str:
    """The paragraph of `attack`'s module docstring (or of a base class's) that states its threat model."""
    for cls in type(attack).__mro__:
        doc = getattr(sys.modules.get(cls.__module__), "__doc__", None) or ""
        for para in doc.split("\n\n"):
            if para.strip().startswith("Threat model"):
                return " ".join(para.split())
    return "not stated"


class Chain(Attack):
    """Its links, in order, each on the previous link's final weights; checkpoints numbered along the chain."""

    name = "chain"
    version = "1"
    budget_label = "link:budget"

    def __init__(self, links=("permute", "lora_ft"), scale: str = "tiny", seed: int = 0):
        if isinstance(links, (DictConfig, ListConfig)):
            links = OmegaConf.to_container(links, resolve=True)
        require(isinstance(links, (list, tuple)),
                f"attack.links must be a list of attacks, e.g. attack.links=[permute,lora_ft] (got {links!r}).")
        require(len(links) >= 1, "attack.links is empty: a chain needs at least one attack, e.g. "
                                 "attack.links=[permute,lora_ft] (for no attack at all, use attack=none).")
        require(scale in SCALES, f"attack.scale must be one of {list(SCALES)} (got {scale!r}); it is the model's "
                                 "(conf/attack/chain.yaml: scale: ${{model.scale}}), which picks each link's defaults.")
        parsed = [parse_link(i, link) for i, link in enumerate(links)]  # every name checked before any compose
        self.configs = [link_config(i, name, over, scale, seed) for i, (name, over) in enumerate(parsed)]
        self.links = [build_link(i, name, cfg) for i, ((name, _), cfg) in enumerate(zip(parsed, self.configs))]
        for i, link in enumerate(self.links[:-1]):
            require(not getattr(link, "train_text_encoder", False),
                    f"attack.links[{i}] ({link.name}) trains the text encoder, but the links after it attack the UNet "
                    f"only (with the world's text encoder); only the last link may set train_text_encoder=true.")
        self.scale, self.seed = scale, seed
        self.uses_card = any(link.uses_card for link in self.links)
        # chain id -> (link index, the link's checkpoint id); id 0 is the input, before every link
        self.where = [(0, 0)] + [(k, c) for k, link in enumerate(self.links) for c in link.checkpoints if c > 0]
        super().__init__(steps=len(self.where) - 1, schedule=range(len(self.where)))

    @property
    def resolved_links(self) -> list[dict]:
        """What each link resolved to (its YAML at this scale and seed, with the chain's overrides) and its class
        version: what a cache address or run id would need to hold for a link's YAML or version change to show."""
        return [{**cfg, "version": link.version} for cfg, link in zip(self.configs, self.links)]

    def address_config(self, config: dict) -> dict:
        """The chain's config with every link as it resolved (its YAML at this scale and seed, and its version)."""
        return {**config, "resolved_links": self.resolved_links}

    def budget(self, checkpoint_id: int) -> str:
        if checkpoint_id == 0:
            return "none"
        k, c = self.where[checkpoint_id]
        path = [(link, link.checkpoints[-1]) for link in self.links[:k]] + [(self.links[k], c)]
        return " → ".join(f"{link.name}:{self._budget(link, cid)}" for link, cid in path)

    @staticmethod
    def _budget(link: Attack, checkpoint_id: int) -> str:
        value = link.budget(checkpoint_id)
        return value if isinstance(value, str) else f"{link.budget_label} {value:g}"

    def threat_models(self) -> list[str]:
        """Each link's stated threat model, in chain order."""
        return [f"{link.name}: {threat_model(link)}" for link in self.links]

    def run(self, world, unet, on_checkpoint: Callable, card=None):
        ids = {(k, c): i for i, (k, c) in enumerate(self.where)}
        for line in self.threat_models():
            log.info("chain link %s", line)
        on_checkpoint(0, unet)
        for k, link in enumerate(self.links):
            if k > 0:  # a fresh trainable copy of the previous link's final weights, as if read back from its file
                unet = world.fresh_unet(unet_state(unet))

            def forward(step: int, model, _k=k, **extra) -> None:
                if step > 0:
                    on_checkpoint(ids[_k, step], model, **extra)

            unet = link.run(world, unet, forward, card if link.uses_card else None)
        return unet
