"""The five-seed tiny-world suite's cost in core-hours, before and after a change, from side-by-side timed runs.

    .venv/bin/python scripts/suite_cost.py --before /tmp/prof/before.json --after /tmp/prof/after.json \
        [--records results/reference/records] [--write docs/performance.md]

Inputs:
* `--before` / `--after`: `scripts/profile_runs.py --json` figures of the same runs (one method, one seed, one run
  per attack kind, one thread each) made with the old and the new code on one machine, side by side;
* `--records`: committed records (their stage timings: what each (method, attack) cell cost with the code that
  made them, on one thread).

The model, stated:
* the suite is every `conf/method` x every `conf/attack` but `none` (the tiny_suite experiment) x `--seeds`;
* a cell (method, attack, seed) costs its attack on the watermarked model plus its evaluation: the records'
  median for that cell where there are records, else the fresh `--before` run of the attack's kind; each attack's
  run on the unmarked model (the null model) is paid once per (attack, seed), shared by the methods; each
  embedding once per (method, seed);
* after = before x the measured after/before ratio of the attack's kind, per part (attack, null attack,
  evaluate), from the side-by-side runs. Kinds: an attack with its own fresh pair uses it; the others use
  the pair named in KIND.

Prints one table per part and the totals; `--write` puts them into the file between
`<!-- suite-cost: begin -->` and `<!-- suite-cost: end -->`.
"""
from __future__ import annotations

import argparse
import json
import statistics
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# which measured run stands for an attack that has none of its own: training loops, LoRA, weight edits
KIND = {"partial_ft": "full_ft", "dreambooth": "full_ft", "trigger_ft": "full_ft", "lazy_ft": "full_ft",
        "expressive_ft": "full_ft", "distill": "full_ft", "chain": "lora_ft", "quantize": "prune", "noise": "prune",
        "merge": "prune", "permute": "prune"}


def suite(conf: Path) -> tuple[list[str], list[str]]:
    methods = sorted(p.stem for p in (conf / "method").glob("*.yaml"))
    attacks = sorted(p.stem for p in (conf / "attack").glob("*.yaml") if p.stem != "none")
    return methods, attacks


def runs(path: Path) -> dict:
    return {f["attack"]: f for f in json.loads(path.read_text())}


def parts(fig: dict) -> dict:
    """(attack on the watermarked model, null attack, evaluate) seconds of one fresh run."""
    st = fig["stages"]
    null = fig.get("null_attack_seconds")
    attack = st.get("attack") or 0.0
    if null is None:  # code before the split: the first run of a seed builds both, the same work twice
        null = attack / 2
    return {"attack": attack - null, "null": null, "evaluate": st.get("evaluate") or 0.0}


def record_cells(records: Path) -> dict:
    cells = defaultdict(lambda: defaultdict(list))
    embeds = defaultdict(list)
    for f in records.glob("*/record.json"):
        r = json.loads(f.read_text())
        if r.get("status") != "complete" or r.get("model") != "tiny":
            continue
        t = r.get("timings", {})
        e = (r.get("metrics", {}).get("embed_seconds") or {}).get("value")
        if e:
            embeds[r["method"]].append(e)
        if t.get("evaluate", {}).get("seconds") is None:
            continue
        # a record's attack stage may include the null model's attack (the first method of a seed pays it)
        null = t.get("attack", {}).get("null_seconds")
        attack = t.get("attack", {}).get("seconds") or 0.0
        cells[r["method"], r["attack"]]["attack"].append(attack - null if null is not None else attack)
        cells[r["method"], r["attack"]]["evaluate"].append(t["evaluate"]["seconds"])
    med = {k: {p: statistics.median(v) for p, v in d.items()} for k, d in cells.items()}
    return med, {m: statistics.median(v) for m, v in embeds.items()}


def estimate(methods, attacks, seeds, before: dict, after: dict, cells: dict, embeds: dict) -> dict:
    def pair(attack):
        name = attack if attack in before and attack in after else KIND.get(attack, "full_ft")
        return parts(before[name]), parts(after[name]), name

    total = {"before": defaultdict(float), "after": defaultdict(float)}
    rows = []
    for attack in attacks:
        b, a, name = pair(attack)
        ratio = {p: (a[p] / b[p] if b[p] else 1.0) for p in b}
        null_before = b["null"]  # the null attack: once per (attack, seed), measured fresh
        total["before"]["null attack"] += seeds * null_before
        total["after"]["null attack"] += seeds * null_before * ratio["null"]
        for method in methods:
            cell = cells.get((method, attack))
            src = "records" if cell else f"fresh {name}"
            cell = cell or {"attack": b["attack"], "evaluate": b["evaluate"]}
            for p in ("attack", "evaluate"):
                total["before"][p] += seeds * cell[p]
                total["after"][p] += seeds * cell[p] * ratio[p]
            rows.append((method, attack, src, cell["attack"], cell["evaluate"],
                         cell["attack"] * ratio["attack"] + cell["evaluate"] * ratio["evaluate"]))
    fallback = statistics.median(embeds.values()) if embeds else 0.0
    for method in methods:
        e = embeds.get(method, 0.0 if method == "none" else fallback)
        total["before"]["embed"] += seeds * e
        total["after"]["embed"] += seeds * e
    return {"total": total, "rows": rows}


def render(est: dict, before: dict, after: dict, seeds: int, n_methods: int, n_attacks: int) -> str:
    t = est["total"]
    h = lambda s: s / 3600  # noqa: E731
    lines = ["| attack kind (fresh run) | before: attack / null attack / evaluate (s) | after (s) | evaluate after / before |",
             "|---|---|---|---|"]
    for name in sorted(set(before) & set(after)):
        b, a = parts(before[name]), parts(after[name])
        lines.append(f"| `{name}` ({before[name]['method']}, seed {before[name]['seed']}) | {b['attack']:.0f} / "
                     f"{b['null']:.0f} / {b['evaluate']:.0f} | {a['attack']:.0f} / {a['null']:.0f} / {a['evaluate']:.0f} | "
                     f"{(a['evaluate'] / b['evaluate'] if b['evaluate'] else float('nan')):.2f} |")
    lines += ["", f"Suite: {n_methods} methods x {n_attacks} attacks x {seeds} seeds, one thread per run.", "",
              "| part | before (core-hours) | after (core-hours) |", "|---|---|---|"]
    for part in ("embed", "attack", "null attack", "evaluate"):
        lines.append(f"| {part} | {h(t['before'][part]):.1f} | {h(t['after'][part]):.1f} |")
    lines.append(f"| **total** | **{h(sum(t['before'].values())):.1f}** | **{h(sum(t['after'].values())):.1f}** |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--before", type=Path, required=True)
    ap.add_argument("--after", type=Path, required=True)
    ap.add_argument("--records", type=Path, default=ROOT / "results" / "reference" / "records")
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--write", type=Path, help="a markdown file with <!-- suite-cost: begin/end --> markers")
    args = ap.parse_args()
    methods, attacks = suite(ROOT / "conf")
    before, after = runs(args.before), runs(args.after)
    cells, embeds = record_cells(args.records)
    est = estimate(methods, attacks, args.seeds, before, after, cells, embeds)
    text = render(est, before, after, args.seeds, len(methods), len(attacks))
    print(text)
    if args.write:
        doc = args.write.read_text()
        begin, end = "<!-- suite-cost: begin -->", "<!-- suite-cost: end -->"
        if begin not in doc or end not in doc:
            raise SystemExit(f"error: {args.write} has no {begin} ... {end} block to fill; add the two markers where "
                             "the table goes.")
        head, rest = doc.split(begin, 1)
        args.write.write_text(head + begin + "\n" + text + end + rest.split(end, 1)[1])


if __name__ == "__main__":
    main()
