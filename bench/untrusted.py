"""Files that come from someone else are data: parsed against a schema, checked, never run.

Owners receive key folders and suspect models; reviewers re-aggregate results folders that others
produced. Everything read from such a file goes through this module:

* **JSON** is read with a size limit (`JSON_LIMIT`, 16 MiB: a record is ~30 KB) from a regular file,
  and a parse error is one paragraph naming the file and the fix (`read_json`).
* **A component config** in a file (a key's method / data / world config, a record's config) is
  instantiated only when its `_target_` is one of the project's own config groups: the class named by
  a YAML in `conf/<group>/` (`component`). Nested `_target_`s, Hydra's other special keys (`_args_`,
  `_partial_`, ...) and `${...}` interpolations are refused: the harness writes resolved configs,
  so a file that carries them was not written by it.
* **Paths** read from a file resolve inside a folder the user named (its own folder, the cache), or
  are refused (`confined`); a run id is a name, never a path (`run_name`).
* **Records** are checked field by field (`parse_record`): the record format, the types of every
  field the aggregation reads, and the identity: the row's group hash is recomputed from the
  record's own config, so a record cannot claim another configuration's row.

Every refusal is a `ConfigError`: one paragraph, exit status 2 in the command-line tools.
"""
from __future__ import annotations

import copy
import html
import json
import re
from functools import lru_cache
from pathlib import Path

import yaml

from bench.errors import ConfigError
from bench.identity import CONF, GROUPS, NOT_HASHED, RECORD_VERSION, SEED, digest as _digest

JSON_LIMIT = 16 * 2 ** 20          # bytes: the largest JSON file (record, key file, verdict) the tools read
STATUSES = ("complete", "failed", "running")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.,=+#@\[\]()-]{0,199}")
_HEX = re.compile(r"[0-9a-f]{8,64}")


def _kind(value) -> str:
    return type(value).__name__


def read_json(path: Path, what: str, fix: str, limit: int = JSON_LIMIT):
    """The parsed JSON of `path`, a regular file of at most `limit` bytes, or one paragraph naming it."""
    path = Path(path)
    try:
        if not path.is_file():
            raise ConfigError(f"{what} '{path}' is {'not a regular file' if path.exists() else 'missing'}. {fix}")
        size = path.stat().st_size
        if size > limit:
            raise ConfigError(f"{what} '{path}' is {size / 2 ** 20:.1f} MiB, over the {limit / 2 ** 20:.0f} MiB this "
                              f"harness reads from a JSON file (a record or key file is a few KB). {fix}")
        with open(path, "rb") as fh:
            text = fh.read(limit + 1)
        return json.loads(text)
    except ConfigError:
        raise
    except (OSError, ValueError, RecursionError) as err:  # unreadable, not UTF-8, not JSON, absurdly nested
        raise ConfigError(f"{what} '{path}' is not readable JSON ({type(err).__name__}: {str(err)[:200]}). "
                          f"{fix}") from None


@lru_cache(maxsize=None)
def registry(group: str) -> dict[str, str]:
    """`_target_` -> YAML name of every component of a config group in `conf/<group>/` (metrics: per collector)."""
    out = {}
    for path in sorted((CONF / group).glob("*.yaml")):
        node = yaml.safe_load(path.read_text()) or {}
        nodes = node.values() if group == "metrics" else [node]
        for n in nodes:
            if isinstance(n, dict) and isinstance(n.get("_target_"), str):
                out.setdefault(n["_target_"], path.stem)
    return out


def _walk(node, where: str, fix: str, top: bool) -> None:
    """Refuse Hydra's special keys below the top and interpolations anywhere in a file's config."""
    if isinstance(node, dict):
        for k, v in node.items():
            if not isinstance(k, str):
                raise ConfigError(f"{where} has a key of type {_kind(k)}. {fix}")
            if k.startswith("_") and not (top and k == "_target_"):
                raise ConfigError(f"{where} sets '{k}', a key the harness never writes into a component's config "
                                  f"(it would make Hydra instantiate or call something else). {fix}")
            _walk(v, f"{where}.{k}", fix, False)
    elif isinstance(node, list):
        for i, v in enumerate(node):
            _walk(v, f"{where}[{i}]", fix, False)
    elif isinstance(node, str) and "${" in node:
        raise ConfigError(f"{where} holds the interpolation {node[:80]!r}; the harness writes resolved configs, so "
                          f"this file was not written by it. {fix}")
    elif node is not None and not isinstance(node, (bool, int, float, str)):
        raise ConfigError(f"{where} holds a value of type {_kind(node)}. {fix}")


def component(node, group: str, where: str, fix: str) -> dict:
    """A component config read from a file, accepted only if it names one of `conf/<group>/`'s components."""
    if not isinstance(node, dict):
        raise ConfigError(f"{where} must be a {group} config (a JSON object), not {_kind(node)}. {fix}")
    target, known = node.get("_target_"), registry(group)
    if not isinstance(target, str) or target not in known:
        raise ConfigError(f"{where} names {str(target)[:120]!r} as its {group} class, which is not one of this "
                          f"harness's {group} components ({', '.join(sorted(set(known.values())))} in conf/{group}/). "
                          f"A file never chooses code to run. {fix}")
    _walk(node, where, fix, True)
    return node


def confined(path, root: Path, what: str, fix: str) -> Path:
    """`path` (relative to `root`, or absolute) resolved, if it lies inside `root`; else one paragraph."""
    if not isinstance(path, str) or not path or "\x00" in path:
        raise ConfigError(f"{what} must be a path (a non-empty string), not {str(path)[:80]!r}. {fix}")
    root = Path(root).resolve()
    full = (root / path).resolve() if not Path(path).is_absolute() else Path(path).resolve()
    if full != root and root not in full.parents:
        raise ConfigError(f"{what} '{path}' lies outside '{root}', the folder it must stay in. {fix}")
    return full


def run_name(value, what: str, fix: str) -> str:
    """A run id or other name used as one path component: letters, digits and `_.,=+#@[]()-`, no slashes."""
    if not isinstance(value, str) or not _NAME.fullmatch(value) or value in (".", ".."):
        raise ConfigError(f"{what} must be a name (letters, digits, _.,=+#@[]()-; no '/' and at most 200 "
                          f"characters), not {str(value)[:80]!r}. {fix}")
    return value


def integer(value, what: str, fix: str, minimum: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{what} must be an integer ≥ {minimum}, not {str(value)[:80]!r}. {fix}")
    return value


def hex_address(value, what: str, fix: str) -> str:
    if not isinstance(value, str) or not _HEX.fullmatch(value):
        raise ConfigError(f"{what} must be a content address (lower-case hex), not {str(value)[:80]!r}. {fix}")
    return value


# ---- records --------------------------------------------------------------------------------------
@lru_cache(maxsize=None)
def seeded_keys() -> tuple[tuple[str, str], ...]:
    """(group, key) of every `key: ${seed}` in conf/: values that a record's resolved config holds as the seed."""
    out = set()
    for path in CONF.glob("*/*.yaml"):
        for line in path.read_text().splitlines():
            m = re.match(r"(\w+):\s*\$\{seed\}", line)
            if m:
                out.add((path.parent.name, m.group(1)))
    return tuple(sorted(out))


def identity_config(config: dict, seed: int) -> dict:
    """The hashed part of a record's resolved config with the seed as the placeholder (as `bench.identity.plan`)."""
    out = {k: copy.deepcopy(v) for k, v in config.items() if k not in NOT_HASHED}
    out["seed"] = SEED
    for group, key in seeded_keys():
        node = out.get(group)
        if isinstance(node, dict) and node.get(key) == seed and not isinstance(node.get(key), bool):
            node[key] = SEED
    return out


def _metric(name, m, where: str, fix: str) -> None:
    if not isinstance(name, str) or not isinstance(m, dict) or "value" not in m:
        raise ConfigError(f"{where} metric {str(name)[:80]!r} must be an object with a 'value'. {fix}")
    v, hib = m["value"], m.get("higher_is_better")
    if v is not None and not isinstance(v, (bool, int, float, str)):
        raise ConfigError(f"{where} metric '{name}' has a value of type {_kind(v)} (numbers, booleans, strings or "
                          f"null only). {fix}")
    if hib is not None and not isinstance(hib, bool):
        raise ConfigError(f"{where} metric '{name}' has higher_is_better {hib!r} (true, false or null). {fix}")


def parse_record(rec, where: str) -> dict:
    """`rec` if it is a record this harness wrote and can aggregate; else one paragraph naming the field."""
    fix = "It was not written by this harness, or was edited."
    if not isinstance(rec, dict):
        raise ConfigError(f"The record {where} is a JSON {_kind(rec)}, not an object. {fix}")
    version = rec.get("record_version")
    if version != RECORD_VERSION:
        raise ConfigError(f"The record {where} is of record format {version!r}; this harness reads format "
                          f"{RECORD_VERSION} (with identity, labels and component versions). {fix}")
    run_name(rec.get("run_id"), f"The record {where}'s run_id", fix)
    if rec.get("status") not in STATUSES:
        raise ConfigError(f"The record {where} has status {str(rec.get('status'))[:40]!r}, not one of "
                          f"{', '.join(STATUSES)}. {fix}")
    seed = integer(rec.get("seed"), f"The record {where}'s seed", fix)
    config = rec.get("config")
    if not isinstance(config, dict) or not all(isinstance(config.get(g), dict) for g in GROUPS):
        raise ConfigError(f"The record {where} lacks its resolved config ({', '.join(GROUPS)}). {fix}")
    for k, v in config.items():  # paths, logger, seed, device: data (a logger is never built from a record)
        if k not in GROUPS:
            _walk(v, f"The record {where}'s config.{k}", fix, True)
    nodes = {**{g: config[g] for g in ("model", "data", "method", "attack")},
             **{f"metrics.{n}": c for n, c in config["metrics"].items()}}
    for name, node in nodes.items():  # aggregation instantiates nothing; bench.tools.roc checks with `component`
        if not isinstance(node, dict) or not isinstance(node.get("_target_"), str):
            raise ConfigError(f"The record {where}'s config.{name} must be a component config with a _target_. {fix}")
        _walk(node, f"The record {where}'s config.{name}", fix, True)
    ident = rec.get("identity")
    if not isinstance(ident, dict) or not isinstance(ident.get("labels"), dict) or \
            not all(isinstance(ident["labels"].get(g), str) for g in GROUPS):
        raise ConfigError(f"The record {where} has no identity with a label per group ({', '.join(GROUPS)}). {fix}")
    hashed = identity_config(config, seed)
    if ident.get("group") != _digest(hashed) or \
            ident.get("components") != {g: _digest(hashed.get(g)) for g in GROUPS}:
        raise ConfigError(f"The record {where} claims row {str(ident.get('group'))[:20]!r}, but its own config "
                          f"hashes to {_digest(hashed)}: the identity was edited, or the config. {fix}")
    for k in ("model", "method", "attack"):
        if not isinstance(rec.get(k), str):
            raise ConfigError(f"The record {where}'s {k} must be a name (a string). {fix}")
    if not isinstance(rec.get("versions"), dict):
        raise ConfigError(f"The record {where} lacks its component versions (an object). {fix}")
    metrics = rec.get("metrics", {} if rec["status"] != "complete" else None)
    if not isinstance(metrics, dict):
        raise ConfigError(f"The complete record {where} has no metrics object. {fix}")
    for name, m in metrics.items():
        _metric(name, m, f"The record {where}'s", fix)
    curves = rec.get("curves", {})
    points = lambda c: isinstance(c, list) and all(isinstance(p, dict) for p in c)  # noqa: E731
    if not isinstance(curves, dict) or not all(points(c) or (isinstance(c, dict) and not k.startswith(("robustness",
                                               "utility"))) for k, c in curves.items()):
        raise ConfigError(f"The record {where}'s curves must map names to lists of points (objects; an LMC curve may "
                          f"be an object). {fix}")
    key = rec.get("key")
    if key is not None and (not isinstance(key, dict) or not isinstance(key.get("folder"), (str, type(None)))):
        raise ConfigError(f"The record {where}'s key must be an object with a folder (a string or null). {fix}")
    if key is not None and key.get("address") is not None:
        hex_address(key["address"], f"The record {where}'s key.address", fix)
    models = rec.get("models")
    if models is not None:
        entries = [models.get("watermarked")] + list(models.get("checkpoints") or []) + \
            list(models.get("null_checkpoints") or []) if isinstance(models, dict) else [None]
        for e in entries:
            if not isinstance(e, dict) or not isinstance(e.get("address"), str) or \
                    not isinstance(e.get("weights"), (str, type(None))):
                raise ConfigError(f"The record {where}'s models must list objects with an address and a weights "
                                  f"path (a string or null). {fix}")
    for k in ("provenance", "timings"):
        if not isinstance(rec.get(k, {}), dict):
            raise ConfigError(f"The record {where}'s {k} must be an object. {fix}")
    if rec.get("error") is not None and not isinstance(rec["error"], str):
        raise ConfigError(f"The record {where}'s error must be a string. {fix}")
    return rec


def safe_cell(text) -> str:
    """Text for a markdown table cell: HTML escaped (markdown viewers render raw HTML), pipes escaped."""
    return html.escape(str(text), quote=False).replace("|", "\\|").replace("\n", " ")


def csv_safe(value):
    """A CSV cell a spreadsheet will not run: text beginning with = + - @ (or tab / CR) gets a leading
    apostrophe (OWASP's advice for CSV injection); numbers stay numbers."""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value
