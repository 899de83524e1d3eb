"""The owner's verdict on a suspect model: is my watermark in it?

    python -m bench.tools.verify KEY SUSPECT [--n-queries N] [--target-fpr F] [--seed S] [--out FILE.json]
                                       [--device cpu|cuda|auto] [--cache DIR] [--method NAME]
                                       [--align-to OWNER_MODEL [--align-probes 8]]
    python -m bench.tools.verify export EMBED_FOLDER OUT_FOLDER

KEY: an embed artifact folder (`<cache>/embed/<address>/`) or a folder written by `export` (never the
marked weights). SUSPECT: a UNet weights file (.safetensors or weights-only torch; pickles are refused
unread) or a diffusers folder (with `unet/`, or a `unet/` folder). The owner's world is rebuilt from the
key's world.json and the method's verifier + `bench.stats.summarise` give the verdict (printed, and
written as JSON). Bad inputs print one paragraph and exit with status 2.

`--align-to OWNER_MODEL` (the owner's own watermarked model, a weights file or diffusers folder, which
the owner keeps and an export never holds): before a white-box verifier reads the suspect, its hidden
units are aligned to the owner's model (`bench.permutation.align`, on probe inputs drawn from the
query seed), undoing a permutation; the verdict JSON says what the alignment found. Black-box
verifiers read outputs, which a permutation does not change, so they are not aligned.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

import torch
from omegaconf import OmegaConf

from bench.cache import Cache, address_of, files_digest, write_json_atomic
from bench.commitment import opens
from bench.errors import CheckpointError, ConfigError
from bench.run.runner import build
from bench.run.stages import world_stage
from bench.stats import summarise
from bench.tools.cli import command
from bench.untrusted import component, hex_address, integer, read_json
from bench.world.pretrained import LOCAL_PREFIXES
from bench.world.base import read_weights, resolve_device, split_weights
from methods.base import Key

log = logging.getLogger("bench.tools.verify")
FORMAT = 1
REEXPORT = "export it again from the embed artifact (`python -m bench.tools.verify export EMBED OUT`)"


def _now() -> str:
    """The date and time, UTC, to the second."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _read_json(path: Path, expect: type = dict):
    """A JSON file of a key folder (size-limited, of the expected type), or a one-paragraph error naming it."""
    obj = read_json(path, "The key folder's file", f"The folder is damaged: {REEXPORT}.")
    if not isinstance(obj, expect):
        raise ConfigError(f"The key folder's '{path}' holds a JSON {type(obj).__name__}, not an object. The folder "
                          f"is damaged or was edited: {REEXPORT}.")
    return obj


def load_key_source(folder: Path) -> dict:
    """The key, method/data/world configs, seed and embed address of an embed folder or an exported folder.

    Every file is data (`bench.untrusted`): the method, data and world configs must name components of this
    harness's conf/ groups, the seed is an integer and the addresses are hex; nothing in the folder chooses
    code to run or a file outside the folder to read."""
    if folder.name == "key" and any((folder.parent / f).is_file() for f in ("key.json", "export.json")):
        folder = folder.parent  # a record's key.folder: the key files inside the embed folder
    kind = "export" if (folder / "export.json").is_file() else "embed" if (folder / "key.json").is_file() else None
    if kind is None:
        what = "it has neither export.json (a folder written by `python -m bench.tools.verify export`) nor key.json (an " \
               "embed artifact, <cache>/embed/<address>/)" if folder.is_dir() else "it does not exist"
        raise ConfigError(f"'{folder}' is not a key folder: {what}. Pass the embed folder of a watermarked run (the "
                          "parent of its record's key.folder) or an exported key folder.")
    needed = ["key/key.safetensors", "key/key_meta.json", "world.json"]
    needed += ["method.json", "data.json"] if kind == "export" else []
    missing = [f for f in needed if not (folder / f).is_file()]
    if missing:
        raise ConfigError(f"The {kind} key folder '{folder}' is missing {', '.join(missing)}. Copy the whole "
                          f"folder, or {REEXPORT}.")
    fix = f"The key folder '{folder}' is damaged or was edited: {REEXPORT}."
    try:
        key = Key.load(folder / "key")
    except ConfigError as err:
        raise ConfigError(f"{err} {REEXPORT[0].upper()}{REEXPORT[1:]}.") from None
    world = _read_json(folder / "world.json")
    world_model = component(world.get("model"), "model", "The key folder's world.json model", fix)
    if world.get("address") is not None:
        hex_address(world["address"], "The key folder's world.json address", fix)
    src = {"folder": str(folder.resolve()), "kind": kind, "key": key, "world": {**world, "model": world_model}}
    if kind == "export":
        meta = _read_json(folder / "export.json")
        method, data = _read_json(folder / "method.json"), _read_json(folder / "data.json", (dict, type(None)))
        seed, address = meta.get("seed"), meta.get("embed_address")
    else:
        card = _read_json(folder / "key.json")  # the embed artifact's cache key: world, data, method config, seed
        k = card.get("key")
        if not isinstance(k, dict) or card.get("stage") != "embed" or not isinstance(card.get("version"), str):
            raise ConfigError(f"The key folder's key.json is not an embed artifact's card (stage 'embed', a version "
                              f"and a key object). {fix}")
        method, data, seed, address = k.get("method"), k.get("data"), k.get("seed"), None
    method = component(method, "method", "The key folder's method config", fix)
    data = None if data is None else component(data, "data", "The key folder's data config", fix)
    seed = None if seed is None else integer(seed, "The key folder's seed", fix)
    if kind == "embed":
        address = address_of(card["stage"], card["version"], card["key"])
    elif address is not None:
        hex_address(address, "The key folder's embed_address", fix)
    return {**src, "method": method, "data": data, "seed": seed, "address": address,
            "commitment": read_commitment(folder, key, fix)}


def read_commitment(folder: Path, key: Key, fix: str) -> dict | None:
    """The key's commitment (`bench.commitment`), checked against the key: None when the folder has none (an
    uncommitted key: nothing shows it existed before the suspect); a commitment that the key and its nonce do not
    open, or one without its opening, is refused in one paragraph."""
    path = folder / "commitment.json"
    if not path.is_file():
        return None
    c = _read_json(path)
    if not all(isinstance(c.get(k), str) for k in ("digest", "model_fingerprint", "committed_at")):
        raise ConfigError(f"The key folder's commitment.json lacks a digest, model_fingerprint or committed_at "
                          f"string. {fix}")
    opening = folder / "key" / "opening.json"
    nonce = _read_json(opening).get("nonce") if opening.is_file() else None
    if not isinstance(nonce, str) or len(nonce) != 64 or any(ch not in "0123456789abcdef" for ch in nonce):
        raise ConfigError(f"The key folder '{folder}' has a commitment but no valid opening (key/opening.json with "
                          f"the 64-hex nonce): the commitment cannot be checked. Copy the whole folder, or {REEXPORT}.")
    if not opens(c, key.tensors, key.meta, nonce):
        raise ConfigError(f"The key in '{folder}' does not match its commitment (commitment.json, digest "
                          f"{c['digest'][:16]}..., committed {c['committed_at']}): the key or its nonce was changed "
                          f"after the commitment was published. A key is evidence only with the commitment made with "
                          f"the model; use the key folder the owner published, unedited.")
    return {k: c[k] for k in ("digest", "model_fingerprint", "committed_at")}


def _not_this_method(name: str, folder: str, why: str) -> ConfigError:
    """The one-paragraph "this key is not method X's" error."""
    return ConfigError(f"The key in '{folder}' does not belong to method {name}: {why}. The key folder's method config "
                       f"does not match its key files; pass the key folder the model was marked with, or {REEXPORT}.")


def check_key_fits(method, key, folder: str) -> None:
    """Refuse a key whose tensors / metadata are not those `method`'s verifier reads (its `key_tensors` and
    `key_meta`, `WatermarkMethod.key_lacks`)."""
    lacking = method.key_lacks(key)
    if lacking:
        raise _not_this_method(method.name, folder, f"it lacks {', '.join(lacking)}")


def _state_diff(suspect: dict, reference: dict) -> list[str]:
    """Missing, unexpected and differently shaped tensors, with at most 3 examples each."""
    shared = sorted(set(suspect) & set(reference))
    groups = {"missing tensors": sorted(set(reference) - set(suspect)),
              "unexpected tensors": sorted(set(suspect) - set(reference)),
              "tensors of another shape, suspect vs world": [f"{k}: {tuple(suspect[k].shape)} vs "
                                                             f"{tuple(reference[k].shape)}" for k in shared
                                                             if suspect[k].shape != reference[k].shape]}
    return [f"{len(v)} {label} (e.g. {'; '.join(v[:3])})" for label, v in groups.items() if v]


def check_architecture(unet_state: dict, text_state: dict | None, world, unet_config: dict | None) -> None:
    """Refuse a suspect whose UNet (config or tensors) or text encoder differs from the key's world."""
    diffs = []
    if unet_config is not None:
        mine, theirs = (json.loads(json.dumps(dict(c), default=str)) for c in (world.unet.config, unet_config))
        diffs += [f"config {k}: {theirs[k]} vs {mine[k]}" for k in sorted(set(mine) & set(theirs))
                  if not k.startswith("_") and theirs[k] != mine[k]][:3]
    diffs += [f"UNet {d}" for d in _state_diff(unet_state, world.unet.state_dict())]
    if text_state is not None:
        diffs += [f"text encoder {d}" for d in _state_diff(text_state, world.pipe.text_encoder.state_dict())]
    if diffs:
        raise CheckpointError(f"The suspect's architecture does not match the key's world "
                              f"({world.meta['model'].get('name')}, {world.address[:12]}): {'; '.join(diffs)}. A "
                              "watermark can only be checked in a model of the marked architecture: pass the UNet "
                              "fine-tuned from the key's base model.")


def read_suspect(path: Path) -> tuple[dict, dict | None, dict | None]:
    """(UNet state, text-encoder state or None, UNet config or None) of a weights file or a diffusers folder."""
    if not path.exists():
        raise CheckpointError(f"The suspect '{path}' does not exist. Pass a UNet weights file (.safetensors) or a "
                              "diffusers folder (a pipeline folder with unet/, or the unet/ folder itself).")
    if path.is_file():
        return (*split_weights(read_weights(path)), None)
    unet_dir = path / "unet" if (path / "unet").is_dir() else path
    if not (unet_dir / "config.json").is_file() or not list(unet_dir.glob("*.safetensors")):
        raise CheckpointError(f"'{unet_dir}' is not a diffusers UNet folder with safetensors weights (config.json "
                              "and diffusion_pytorch_model.safetensors). Pickle-based .bin weights are never loaded: "
                              "convert them on a trusted machine with save_pretrained(..., safe_serialization=True), "
                              "or pass a .safetensors weights file.")
    from diffusers import UNet2DConditionModel
    try:
        unet = UNet2DConditionModel.from_pretrained(str(unet_dir), use_safetensors=True)
        text = None
        if unet_dir != path and list((path / "text_encoder").glob("*.safetensors")):  # a pipeline's own text encoder
            from transformers import CLIPTextModel
            text = CLIPTextModel.from_pretrained(str(path / "text_encoder"), use_safetensors=True).state_dict()
    except (OSError, ValueError, RuntimeError) as err:
        raise CheckpointError(f"Could not load the diffusers folder '{path}': {err}. Re-save it with "
                              "save_pretrained(..., safe_serialization=True).") from None
    return unet.state_dict(), text, dict(unet.config)


def content_digest(path: Path) -> str:
    """sha256 (16 hex) of a suspect: the file's bytes, or a diffusers folder's safetensors files and configs."""
    if path.is_file():
        return files_digest(path.parent, [path])[:16]
    return files_digest(path, sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in
                                     (".safetensors", ".json")))[:16]


def out_path(suspect: Path, out: str | None, key_folder: str, key_digest: str) -> Path:
    """Where the verdict goes. `--out` may not be the suspect, anything inside the key folder (or a suspect folder),
    or an existing file: evidence is never overwritten. The default, `<results>/verify/<suspect name>.<suspect
    content hash>.<key hash>.verify.json`, is unique per (suspect content, key); a verdict already there is kept
    and the new one gets the next free `-N` suffix."""
    suspect_r, key_r = suspect.resolve(), Path(key_folder).resolve()
    if out:
        path = Path(out).resolve()
        protected = [(suspect_r, "the suspect"), (key_r, "the key folder")]
        for p, what in protected:
            if path == p or p in path.parents:
                raise ConfigError(f"--out '{out}' is {what} or inside it; a verdict never overwrites the evidence it "
                                  "is about. Pass a new file elsewhere, e.g. --out verdict.json.")
        if path.exists():
            raise ConfigError(f"--out '{out}' already exists; a verdict never replaces a file. Pass a new name, or "
                              "move the old file away first.")
        return Path(out)
    folder = Path(os.environ.get("BENCH_RESULTS", "results")) / "verify"
    stem = f"{suspect_r.name}.{content_digest(suspect_r)[:12]}.{key_digest[:12]}"
    path, n = folder / f"{stem}.verify.json", 1
    while path.exists():
        n += 1
        path = folder / f"{stem}-{n}.verify.json"
    return path


PATH_KEYS = {"path": "--model-path", "clip_path": None, "unet_weights": None, "data_root": "--data-root",
             "root": "--data-root", "roots": None}


def _local_paths(model_cfg: dict, data_cfg: dict | None, args) -> tuple[dict, dict | None]:
    """The key's model and data configs with every folder or file they name replaced by the user's (--model-path,
    --data-root) or dropped where unused (CLIP, weight overrides); a key never makes the harness read a path of its
    choosing. A local path the user did not replace is refused."""
    given = {"--model-path": getattr(args, "model_path", None), "--data-root": getattr(args, "data_root", None)}
    out = []
    for where, cfg in (("model", model_cfg), ("data", data_cfg)):
        if cfg is None:
            out.append(None)
            continue
        cfg = dict(cfg)
        for k, flag in PATH_KEYS.items():
            value = cfg.get(k)
            if value is None:
                continue
            if flag and given[flag]:
                cfg[k] = given[flag]
            elif k == "clip_path" or k == "unet_weights":
                cfg[k] = None  # CLIP scoring and weight overrides play no part in verification
            elif k == "path" and isinstance(value, str) and not value.startswith(LOCAL_PREFIXES) and ".." not in value:
                continue  # a hub id: a name, not a path
            else:
                raise ConfigError(f"The key's {where} config names the path {str(value)[:120]!r} ({where}.{k}); a key "
                                  f"never chooses a file to read. Pass your own copy with "
                                  f"{flag or '--data-root'} (the folder the owner's run used).")
        out.append(cfg)
    return out[0], out[1]


def owner_world(src: dict, cache: str, device: str, args=None):
    """The key's world, loaded from the user's cache (or a pretrained folder the user names): a key never builds a
    world, and never names a file to read."""
    model_cfg, data_cfg = _local_paths(src["world"]["model"], src["data"], args)
    data = build(OmegaConf.create(data_cfg), "data") if data_cfg else None
    world, _ = world_stage(Cache(cache), build(OmegaConf.create(model_cfg), "model"), model_cfg, data,
                           resolve_device(device), allow_build=False)
    if world.address != src["world"].get("address"):
        log.warning("the rebuilt world %s is not the key's %s (code version changed?): the verdict may not hold",
                    world.address[:12], str(src["world"].get("address"))[:12])
    return world


def run_verifier(method, world, unet, text_state, src: dict, n_queries: int, seed: int):
    """The method's evidence on `unet`; a key the verifier cannot read is refused in one paragraph."""
    torch.manual_seed(seed)
    with world.text_encoder_as(text_state):
        try:
            return method.verify(world, unet, src["key"], n_queries, seed)
        except (KeyError, IndexError) as err:
            raise _not_this_method(method.name, src["folder"], f"its verifier needs {err}") from None
        except (TypeError, ValueError) as err:  # key metadata of the wrong type or range
            raise _not_this_method(method.name, src["folder"], f"its verifier could not read it ({err})") from None
        except RuntimeError as err:
            if not any(w in str(err) for w in ("size", "shape", "dimension")):
                raise
            raise _not_this_method(method.name, src["folder"], f"a key tensor has the wrong shape ({err})") from None


def align_suspect(method, world, unet, owner_model: Path, seed: int, probes: int):
    """(the suspect aligned to the owner's watermarked model, what the alignment found) for a white-box verifier."""
    if method.access != "white-box":
        return unet, {"skipped": f"{method.name}'s verifier is {method.access}: a permutation does not change what it "
                                 "reads"}
    if not owner_model.exists():
        raise ConfigError(f"--align-to '{owner_model}' does not exist. Pass your own watermarked model (a UNet weights "
                          "file or a diffusers folder), the one the suspect is aligned to before verifying.")
    from bench.metrics.verification import Verification
    from bench.permutation import align
    ref_state, _, ref_config = read_suspect(owner_model)
    check_architecture(ref_state, None, world, ref_config)
    reference = world.fresh_unet(ref_state).requires_grad_(False).eval().to(unet.dtype)
    return align(reference, unet, Verification(align="activations", align_probes=probes).probe(world, seed))


def verify(args) -> dict:
    """Check the key, read the suspect, rebuild the world, verify; write the JSON and return it."""
    start, suspect = time.perf_counter(), Path(args.suspect)
    src = load_key_source(Path(args.key))
    if not suspect.exists():
        read_suspect(suspect)  # the one-paragraph "does not exist"
    out = out_path(suspect, args.out, src["folder"], src["address"] or content_digest(Path(src["folder"]) / "key"))
    method = build(OmegaConf.create(src["method"]), "method")
    if args.method and args.method != method.name:
        raise ConfigError(f"The key in '{src['folder']}' was made by method {method.name} (its method config), not "
                          f"{args.method} (--method). Pass a key of a {args.method} embedding, or drop --method.")
    if not method.verifiable:
        raise ConfigError(f"method {method.name} has no verifier; pass the key of a watermarking method.")
    check_key_fits(method, src["key"], src["folder"])
    unet_state, text_state, unet_config = read_suspect(suspect)
    timings = {"read": round(time.perf_counter() - start, 3)}
    world = owner_world(src, args.cache, args.device, args)
    timings["world"] = round(time.perf_counter() - start - timings["read"], 3)
    check_architecture(unet_state, text_state, world, unet_config)
    unet = world.fresh_unet(unet_state).requires_grad_(False).eval()
    unet = unet if unet.dtype == world.unet.dtype else unet.to(world.unet.dtype)  # fresh_unet is fp32
    n_queries = args.n_queries or integer((src["world"]["model"].get("eval") or {}).get("n_queries", 8),
                                          "The key's world.json model.eval.n_queries", "Pass --n-queries N.", 1)
    t = time.perf_counter()
    seed = args.seed if args.seed is not None else (src["seed"] if src["seed"] is not None else 0)
    found = None
    if args.align_to:
        unet, found = align_suspect(method, world, unet, Path(args.align_to), seed, args.align_probes)
    s = summarise(run_verifier(method, world, unet, text_state, src, n_queries, seed), args.target_fpr)
    timings.update(verify=round(time.perf_counter() - t, 3), total=round(time.perf_counter() - start, 3))
    commitment = {"status": "uncommitted"} if src["commitment"] is None else {"status": "committed",
                                                                               **src["commitment"]}
    result = {"method": method.name, "key": {k: src[k] for k in ("folder", "kind", "address", "seed")},
              "commitment": commitment,
              "suspect": str(suspect.resolve()), "suspect_kind": "file" if suspect.is_file() else "diffusers folder",
              "text_encoder": text_state is not None, "world": world.address, "n_queries": s["n_queries"],
              "target_fpr": args.target_fpr, "seed": seed, "p_value": s["p_value"], "detected": s["detected"],
              "bit_acc": s["bit_acc"], "verification_rate": s["verification_rate"], "summary": s,
              "timings": timings, "date": _now(), "out": str(out), **({"align": found} if found else {})}
    write_json_atomic(out, result, exclusive=True)  # never replaces a verdict written meanwhile
    return result


def export(embed: Path, out: Path) -> Path:
    """Copy what verification needs (never the watermarked weights) into a new self-contained folder."""
    src = load_key_source(embed)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ConfigError(f"'{out}' exists and is not an empty folder; refusing to overwrite it. Pick a new folder.")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{uuid.uuid4().hex[:8]}"  # renamed into place when complete
    try:
        (tmp / "key").mkdir(parents=True)
        for name in ("key.safetensors", "key_meta.json", "opening.json"):  # the key and its commitment's nonce
            if name != "opening.json" or src["commitment"] is not None:
                shutil.copyfile(Path(src["folder"]) / "key" / name, tmp / "key" / name)
        if src["commitment"] is not None:  # checked against the key by load_key_source
            shutil.copyfile(Path(src["folder"]) / "commitment.json", tmp / "commitment.json")
        shutil.copy2(Path(src["folder"]) / "world.json", tmp / "world.json")
        meta = {"format": FORMAT, "embed_address": src["address"], "seed": src["seed"], "date": _now()}
        for name, obj in (("method", src["method"]), ("data", src["data"]), ("export", meta)):
            (tmp / f"{name}.json").write_text(json.dumps(obj, indent=1))
        if out.exists():
            out.rmdir()
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def report(r: dict) -> str:
    """The human-readable verdict."""
    s = r["summary"]
    score = (f"bit accuracy {r['bit_acc']:.3f} ({s['matches']}/{s['n_bits']} bits after the vote)"
             if r["bit_acc"] is not None else
             f"verification rate {r['verification_rate']:.3f} ({s['matches']}/{s['n_queries']} queries match)")
    mantissa, exponent = f"{r['target_fpr']:e}".split("e")  # 1e-3, not 0.001
    fpr = f"{mantissa.rstrip('0').rstrip('.')}e{int(exponent)}"
    c = r["commitment"]
    committed = (f"committed {c['committed_at']} with the model {c['model_fingerprint'][:16]} (digest "
                 f"{c['digest'][:16]}...): the key existed then" if c["status"] == "committed" else
                 "UNCOMMITTED: no commitment shows that this key existed before the suspect (a key made from the "
                 "suspect itself can verify on it)")
    a = r.get("align")
    aligned = [] if a is None else [f"aligned:  {a['skipped']}" if "skipped" in a else
                                    f"aligned:  {a['moved']:.1%} of {a['units']} units moved to match the owner's model "
                                    f"(matched similarity {a['similarity']:.3f}, {a['seconds']:.1f} s)"]
    return "\n".join([f"method:   {r['method']} (key {r['key']['folder']})", f"key:      {committed}",
                      f"suspect:  {r['suspect']}", *aligned, f"queries:  {r['n_queries']}, {score}",
                      f"p-value:  {r['p_value']:.3g}",
                      f"verdict:  {'DETECTED' if r['detected'] else 'not detected'} at FPR {fpr}",
                      f"written:  {r['out']}"])


def parse(argv: list[str]) -> argparse.Namespace:
    """The two commands: verify (KEY SUSPECT ...) and export (EMBED_FOLDER OUT_FOLDER)."""
    if argv[:1] == ["export"]:
        p = argparse.ArgumentParser(prog="python -m bench.tools.verify export", description=export.__doc__)
        p.add_argument("embed", type=Path)
        p.add_argument("out", type=Path)
        return p.parse_args(argv[1:])
    p = argparse.ArgumentParser(prog="python -m bench.tools.verify", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("key", help="an embed artifact folder or a folder written by `export`")
    p.add_argument("suspect", help="a UNet weights file or a diffusers folder")
    p.add_argument("--n-queries", type=int, default=None, help="default: the model config's eval.n_queries")
    p.add_argument("--target-fpr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=None, help="query noise seed (default: the key's, as its run used)")
    p.add_argument("--out", default=None, help="a new file (never the suspect, the key or an existing file); default: "
                   "results/verify/<suspect name>.<suspect hash>.<key hash>.verify.json")
    p.add_argument("--device", default="auto", choices=["cpu", "cuda", "auto"])
    p.add_argument("--cache", default=str(Path(os.environ.get("BENCH_RESULTS", "results")) / "cache"))
    p.add_argument("--method", default=None, help="refuse unless the key belongs to this method")
    p.add_argument("--model-path", default=None, help="your copy of a pretrained key's model folder (the key's own "
                   "path is never read)")
    p.add_argument("--data-root", default=None, help="your copy of the key's data folder (the key's own path is "
                   "never read)")
    p.add_argument("--align-to", default=None, help="your watermarked model: align the suspect's hidden units to it "
                   "before a white-box verifier reads them")
    p.add_argument("--align-probes", type=int, default=8, help="probe inputs the alignment matches on (default 8)")
    args = p.parse_args(argv)
    if args.align_probes < 1:
        p.error("--align-probes must be at least 1")
    if (args.n_queries is not None and args.n_queries < 1) or not 0 < args.target_fpr < 1:
        p.error("--n-queries must be at least 1 and --target-fpr in (0, 1)")
    return args


def _main(argv: list[str]) -> int:
    args = parse(argv)
    print(f"exported: {export(args.embed, args.out)}" if argv[:1] == ["export"] else report(verify(args)))
    return 0


main = command(_main)

if __name__ == "__main__":
    sys.exit(main())
