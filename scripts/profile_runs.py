"""Where a tiny-world run's time goes: one run per attack, sampled by py-spy, broken down by stage and operation.

    OMP_NUM_THREADS=1 .venv/bin/python scripts/profile_runs.py --out /tmp/prof --attacks none full_ft lora_ft

Each attack runs as `python -m bench model=tiny method=M attack=A seed=S` under `py-spy record` (one thread, the
suite's setting), all in one cache, in the order given: as in a suite, the world, the embedding and the base
model's figures are built by the first run that needs them and reused by the next (start with `attack=none` to
pay them once, outside the attack runs). For every run it writes `<out>/<attack>.raw` (py-spy's collapsed stacks)
and prints, from the record and the samples:

* the record's stage seconds (world, embed, attack, the null model's attack, evaluate) and each collector's;
* the share of samples per (where, operation): where = the stage or collector on the stack, operation = the
  innermost known operation (sampling loop, VAE decode, Inception, CLIP, a training step, a held-out loss, weight
  loading or saving, Python start-up and imports).

`--json` collects every run's figures in one file (docs/performance.md quotes them). py-spy: `pip install py-spy`.
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# (pattern on a frame "function (path:line)", where): the outermost match names where the time went
WHERE = [
    (r"^world_stage ", "world"), (r"^embed_stage ", "embed"), (r"^attack_stage ", "attack"),
    (r"^compute \(.*bench/metrics/(\w+)\.py", r"eval:\1"), (r"^finalise \(.*bench/metrics/(\w+)\.py", r"eval:\1"),
    (r"^write_grid ", "eval:sample grid"), (r"^write_record ", "record"),
]
# (pattern, operation): the innermost match names what the time was spent doing
OPERATION = [
    (r"^features \(.*bench/metrics/inception\.py", "Inception features"),
    (r"clip_score\.py", "CLIP features"),
    (r"^decode \(.*autoencoder", "VAE decode"), (r"^encode \(.*autoencoder", "VAE encode"),
    (r"^generate \(.*bench/diffusion\.py", "sampling loop (UNet)"),
    (r"^denoising_loss \(", "held-out denoising loss"),
    (r"safetensors|load_state_dict|save_file|load_file", "weights I/O"),
    (r"^<module> \(|_find_and_load|_call_with_frames_removed", "start-up and imports"),
]
TRAINING = r"^optimise \(.*bench/training\.py"  # anything under the shared training loop is a training step
# py-spy names a method by its qualified name ("Verification.compute (bench/metrics/verification.py:113)"): a pattern
# written for the bare name ("^compute \(") also matches it with its class in front
QUALIFIED = r"^(?:[\w<>]+\.)*"
WHERE = [(QUALIFIED + p[1:] if p.startswith("^") else p, n) for p, n in WHERE]
OPERATION = [(QUALIFIED + p[1:] if p.startswith("^") else p, n) for p, n in OPERATION]


def classify(stack: list[str]) -> tuple[str, str]:
    where = "other"
    for frame in stack:  # outermost first
        for pattern, name in WHERE:
            m = re.search(pattern, frame)
            if m:
                where = m.expand(name)
                break
        if where != "other":
            break
    op = "training step (forward, backward, AdamW)" if any(re.search(TRAINING, f) for f in stack) else "other"
    for frame in reversed(stack if op == "other" else []):  # innermost first
        for pattern, name in OPERATION:
            if re.search(pattern, frame):
                op = name
                break
        if op != "other":
            break
    if where == "other" and op == "start-up and imports":
        where = "start-up"
    return where, op


def read_raw(path: Path) -> collections.Counter:
    counts: collections.Counter = collections.Counter()
    for line in path.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        if stack and n.isdigit():
            frames = [f for f in stack.split(";") if not f.startswith("process ") and not f.startswith("thread ")]
            counts[classify(frames)] += int(n)
    return counts


def run_one(attack: str, args, extra: list[str]) -> None:
    """One profiled run: `<out>/<attack>.raw` (py-spy) and `<out>/<attack>.wall` (seconds), its record in the results."""
    results = args.out / "results"
    cmd = [sys.executable, "-m", "bench", "model=tiny", f"method={args.method}", f"attack={attack}", f"seed={args.seed}",
           f"paths.results_dir={results}", f"paths.cache_dir={args.cache}", *extra]
    raw = args.out / f"{attack}.raw"
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"), "PYTHONUNBUFFERED": "1"}
    start = time.perf_counter()
    proc = subprocess.run([args.py_spy, "record", "--rate", str(args.rate), "--format", "raw", "--nonblocking",
                           "-o", str(raw), "--", *cmd], cwd=ROOT, env=env, capture_output=True, text=True)
    (args.out / f"{attack}.wall").write_text(f"{time.perf_counter() - start:.1f}\n")
    if proc.returncode != 0:
        raise SystemExit(f"error: {attack}: exit {proc.returncode}\n{proc.stderr[-3000:]}")


def figures(attack: str, args) -> dict:
    """The figures of one profiled run, from its raw samples and its record."""
    results, raw = args.out / "results", args.out / f"{attack}.raw"
    wall = float((args.out / f"{attack}.wall").read_text()) if (args.out / f"{attack}.wall").exists() else None
    env = {"OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    records = sorted((results / "records").glob(f"*{args.method}*{attack}*/record.json"),
                     key=lambda p: p.stat().st_mtime)
    record = json.loads(records[-1].read_text()) if records else {}
    samples = read_raw(raw)
    total = sum(samples.values()) or 1
    t = record.get("timings", {})
    return {"attack": attack, "method": args.method, "seed": args.seed, "wall_seconds": wall,
            "stages": {k: v.get("seconds") for k, v in t.items()},
            "null_attack_seconds": t.get("attack", {}).get("null_seconds"),
            "collectors": t.get("evaluate", {}).get("collectors", {}),
            "built": {k: v.get("built") for k, v in t.items() if "built" in v},
            "shares": {f"{w} | {o}": round(n / total, 4) for (w, o), n in samples.most_common()},
            "samples": total, "threads": env["OMP_NUM_THREADS"]}


def show(fig: dict) -> None:
    print(f"\n## {fig['method']} x {fig['attack']} (seed {fig['seed']}, {fig['threads']} thread): "
          f"{fig['wall_seconds']} s wall")
    print("stages:", ", ".join(f"{k} {v:.0f} s" for k, v in fig["stages"].items() if v is not None),
          f"(null model's attack {fig['null_attack_seconds'] or 0:.0f} s of the attack stage)")
    print("collectors:", ", ".join(f"{k} {v:.0f} s" for k, v in fig["collectors"].items()))
    print("samples (where | operation: share):")
    for name, share in list(fig["shares"].items())[:12]:
        print(f"  {share:6.1%}  {name}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True, help="folder for results, raw profiles and figures")
    ap.add_argument("--cache", type=Path, help="stage cache (default OUT/cache; share one to reuse stages)")
    ap.add_argument("--method", default="watermarkdm")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--attacks", nargs="+", default=["none", "full_ft"])
    ap.add_argument("--rate", type=int, default=20, help="py-spy samples per second")
    ap.add_argument("--json", type=Path, help="write every run's figures here")
    ap.add_argument("--no-run", action="store_true", help="only read the figures of runs already in OUT")
    ap.add_argument("overrides", nargs="*", help="extra Hydra overrides for every run")
    args = ap.parse_args()
    args.cache = args.cache or args.out / "cache"
    args.py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not args.no_run and not Path(args.py_spy).exists():
        raise SystemExit("error: py-spy is not installed: `pip install py-spy`, then run this again.")
    args.out.mkdir(parents=True, exist_ok=True)
    done = []
    for attack in args.attacks:
        if not args.no_run:
            run_one(attack, args, args.overrides)
        fig = figures(attack, args)
        show(fig)
        done.append(fig)
        if args.json:
            args.json.write_text(json.dumps(done, indent=1))


if __name__ == "__main__":
    main()
