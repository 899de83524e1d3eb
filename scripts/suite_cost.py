"""The five-seed tiny-world suite's cost in core-hours, before and after a change, from side-by-side timed runs.

    .venv/bin/python scripts/suite_cost.py --before /tmp/prof/before.json --after /tmp/prof/after.json \
        [--records results/reference/records] [--write docs/performance.md]

Inputs:
* `--before` / `--after`: `scripts/profile_runs.py --json` figures of the same runs (one method, one seed, one run
  per attack kind, one thread each) made with the old and the new code on one machine, side by side;
* `--records`: committed records, for what the fresh runs cannot give: how much more or less each *method*
  costs than the profiled one (the median over attacks of its cell's stage seconds over the profiled method's,
  per stage), and each method's embedding seconds.

The model, stated:
* the suite is every `conf/method` x every `conf/attack` but `none` (the tiny_suite experiment) x `--seeds`;
* a cell (method, attack, seed) costs its attack on the watermarked model plus its evaluation: the fresh run of
  the attack's kind (the attack itself, or the one KIND names) times the method's factor per stage; the attack
  on the unmarked model (the null model) is paid once per (attack, seed), shared by the methods; each embedding
  once per (method, seed);
* before and after use the same factors and counts: only the fresh runs differ.

Prints the side-by-side runs and the totals; `--write` puts them into the file between
`<!-- suite-cost: begin -->` and `<!-- suite-cost: end -->`.

    .venv/bin/python scripts/suite_cost.py --suite RESULTS_DIR [--write docs/performance.md]

measures instead of modelling: the suite's own records (`suite_cell`: every method x attack at its defaults on the
tiny world, seeds 0 to `--seeds` - 1) give each attack's seconds per cell (the attack on the watermarked model, its
evaluation: median over the cells done, with their range; CPU seconds where a record has them, which a pause or a
shared core does not inflate, wall-clock seconds otherwise), the null attack once per (attack, seed) and each
embedding once per (method, seed), as built. The core-hours spent so far are summed from the records; the projection
adds, for each cell not yet run, its attack's median (method none's: the evaluation's only, its attack being the null
attack; no figure where the attack has no cell yet). `--write` fills the `<!-- suite-records: ... -->`
block, and the `<!-- search-cost: ... -->` block with the worst-case searches' cost (`search_cost`).
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


def record_cells(records: Path) -> tuple[dict, dict]:
    """Median (attack on the watermarked model, evaluate) seconds per (method, attack) cell, and each method's median
    embedding seconds, from the records."""
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
        if t.get("evaluate", {}).get("seconds") is None or t.get("attack", {}).get("built") is False:
            continue
        null = t.get("attack", {}).get("null_seconds")
        attack = t.get("attack", {}).get("seconds") or 0.0
        cells[r["method"], r["attack"]]["attack"].append(attack - null if null is not None else attack)
        cells[r["method"], r["attack"]]["evaluate"].append(t["evaluate"]["seconds"])
    med = {k: {p: statistics.median(v) for p, v in d.items()} for k, d in cells.items()}
    return med, {m: statistics.median(v) for m, v in embeds.items()}


def method_factors(cells: dict, methods: list[str], profiled: str) -> dict:
    """Per method and stage: the median over attacks of its cell's seconds over the profiled method's (1 without
    records to compare; the profiled method is 1)."""
    out = {}
    for m in methods:
        out[m] = {}
        for part in ("attack", "evaluate"):
            ratios = [cells[m, a][part] / cells[profiled, a][part] for (mm, a) in cells
                      if mm == m and (profiled, a) in cells and cells[profiled, a][part] > 1]
            out[m][part] = statistics.median(ratios) if ratios else 1.0
    return out


def estimate(methods, attacks, seeds, runs_: dict, factors: dict, embeds: dict) -> dict:
    total = defaultdict(float)
    for attack in attacks:
        name = attack if attack in runs_ else KIND.get(attack, "full_ft")
        p = parts(runs_[name])
        total["null attack"] += seeds * p["null"]
        for method in methods:
            for part in ("attack", "evaluate"):
                total[part] += seeds * p[part] * factors[method][part]
    fallback = statistics.median(embeds.values()) if embeds else 0.0
    for method in methods:
        total["embed"] += seeds * embeds.get(method, 0.0 if method == "none" else fallback)
    return total


def render(before_total: dict, after_total: dict, before: dict, after: dict, factors: dict, seeds: int,
           n_methods: int, n_attacks: int) -> str:
    h = lambda s: s / 3600  # noqa: E731
    lines = ["| fresh run (one thread) | before: attack / null attack / evaluate (s) | after (s) | evaluate after / before |",
             "|---|---|---|---|"]
    for name in sorted(set(before) & set(after)):
        b, a = parts(before[name]), parts(after[name])
        lines.append(f"| `{before[name]['method']}` x `{name}` (seed {before[name]['seed']}) | {b['attack']:.0f} / "
                     f"{b['null']:.0f} / {b['evaluate']:.0f} | {a['attack']:.0f} / {a['null']:.0f} / {a['evaluate']:.0f} | "
                     f"{(a['evaluate'] / b['evaluate'] if b['evaluate'] else float('nan')):.2f} |")
    lines += ["", "Where the new code's time goes (py-spy samples as 'where: operation', the five largest shares per run):",
              "", "| run | wall (s) | largest shares |", "|---|---|---|"]
    for name in sorted(after):
        shares = "; ".join(f"{k.replace(' | ', ': ')} {v:.0%}" for k, v in list(after[name]["shares"].items())[:5])
        lines.append(f"| `{after[name]['method']}` x `{name}` | {after[name]['wall_seconds']:.0f} | {shares} |")
    lines += ["", "Method factors from the records (median over attacks of the cell's seconds over the profiled "
              "method's): " + ", ".join(f"{m} {f['attack']:.2f} / {f['evaluate']:.2f}" for m, f in factors.items()) +
              " (attack / evaluate).", "",
              f"Suite: {n_methods} methods x {n_attacks} attacks x {seeds} seeds, one thread per run. Each fresh "
              "figure is one run (n = 1 per code version and attack kind), so the totals carry no interval: a "
              "difference of a few percent between before and after is within what one run can tell.", "",
              "| part | before (core-hours) | after (core-hours) |", "|---|---|---|"]
    for part in ("embed", "attack", "null attack", "evaluate"):
        lines.append(f"| {part} | {h(before_total[part]):.1f} | {h(after_total[part]):.1f} |")
    lines.append(f"| **total** | **{h(sum(before_total.values())):.1f}** | **{h(sum(after_total.values())):.1f}** |")
    return "\n".join(lines) + "\n"


def suite_cell(r: dict, methods: list[str], attacks: list[str], seeds: int) -> bool:
    """Whether record `r` is a cell of the tiny suite: complete, a suite method and attack at a suite seed, every
    component at its YAML defaults on the default tiny world (its labels are the bare names). Decided by labels, not
    by the `experiment` tag: a run made first by another sweep (tiny_disputes.sh's `align=none` permute runs have
    the suite's run ids) is the same run, and the suite then finds it done."""
    labels = (r.get("identity") or {}).get("labels") or {}
    return (r.get("status") == "complete" and r.get("seed") in range(seeds) and r.get("method") in methods
            and r.get("attack") in attacks and labels == {"model": "tiny", "data": "tiny", "method": r["method"],
                                                         "attack": r["attack"], "metrics": "default"})


def read_records(results: Path) -> list[dict]:
    """Every record under `results` (or a records folder), read once for all the tables of one `--suite` pass."""
    folder = results / "records" if (results / "records").is_dir() else results
    return [json.loads(f.read_text()) for f in sorted(folder.glob("*/record.json"))]


def suite_records(results: Path, seeds: int, records: list[dict] | None = None) -> tuple[list[dict], list[str], list[str]]:
    """The complete records of the tiny suite under `results` (or a records folder), and its methods and attacks."""
    methods, attacks = suite(ROOT / "conf")
    records = read_records(results) if records is None else records
    return [r for r in records if suite_cell(r, methods, attacks, seeds)], methods, attacks


def measured(records: list[dict], methods: list[str], attacks: list[str], seeds: int) -> str:
    """The suite's cost from its own records: per attack, per cell seconds; spent and projected core-hours."""
    h = lambda s: s / 3600  # noqa: E731
    cells, nulls, embeds = {}, defaultdict(float), {}
    with_cpu = 0
    for r in records:
        t = r["timings"]
        cpu = all("cpu_seconds" in t[s] for s in ("attack", "evaluate"))  # CPU time where the record has it
        with_cpu += cpu
        secs, null_secs = ("cpu_seconds", "null_cpu_seconds") if cpu else ("seconds", "null_seconds")
        null = t["attack"].get(null_secs) or 0.0
        cells[r["method"], r["attack"], r["seed"]] = {"attack": t["attack"][secs] - null,
                                                      "evaluate": t["evaluate"][secs]}
        nulls[r["attack"], r["seed"]] = max(nulls[r["attack"], r["seed"]], null)  # built once, read by the others
        e = (r["metrics"].get("embed_seconds") or {}).get("value")  # wall seconds of the embedding, wherever built
        embed = t.get("embed", {})
        if embed.get("built") and "cpu_seconds" in embed:  # this run built it: its CPU seconds
            embeds[r["method"], r["seed"]] = embed["cpu_seconds"]
        elif e is not None:
            embeds.setdefault((r["method"], r["seed"]), e)
    lines = [f"| attack | cells done (of {len(methods) * seeds}) | attack on the marked model (s): median [min, max], method none left out | "
             "evaluate (s): median [min, max] | null attack per seed (s): median |", "|---|---|---|---|---|"]
    spent = sum(c["attack"] + c["evaluate"] for c in cells.values()) + sum(nulls.values()) + sum(embeds.values())
    projected, unknown = spent, []
    fmt = lambda v: f"{statistics.median(v):.0f} [{min(v):.0f}, {max(v):.0f}]"  # noqa: E731
    marked = [m for m in methods if m != "none"]
    for attack in attacks:
        done = [c for (m, a, s), c in cells.items() if a == attack]
        # method=none's "marked" model is the base model: its attack is the null attack, counted with the nulls
        on_marked = [c["attack"] for (m, a, s), c in cells.items() if a == attack and m != "none"]
        null = [v for (a, s), v in nulls.items() if a == attack]
        if not on_marked:
            unknown.append(attack)
            lines.append(f"| `{attack}` | {len(done)} | | | |")
            continue
        ev = [c["evaluate"] for c in done]
        lines.append(f"| `{attack}` | {len(done)} | {fmt(on_marked)} | {fmt(ev)} | {statistics.median(null):.0f} |")
        n_none = len(done) - len(on_marked)
        projected += (len(marked) * seeds - len(on_marked)) * (statistics.median(on_marked) + statistics.median(ev))
        projected += (("none" in methods) * seeds - n_none) * statistics.median(ev)
        projected += (seeds - len(null)) * statistics.median(null)
    if embeds:
        projected += (len(marked) * seeds - len(embeds)) * statistics.median(embeds.values())
    n_cells = len(methods) * len(attacks) * seeds
    lines += ["", f"Suite: {len(methods)} methods x {len(attacks)} attacks x {seeds} seeds = {n_cells} runs, one "
              f"thread each. **Done: {len(cells)} runs, {h(spent):.1f} core-hours** (the records' own stage seconds: "
              f"the runs, the null attacks they built, {len(embeds)} embeddings). "
              + (f"**Projected whole suite: {h(projected):.1f} core-hours**, each missing run at its attack's median "
                 "(a missing `none` run at the evaluation's only: its attack is the null attack) and each missing "
                 "embedding at the median embedding."
                 if not unknown else f"No projection: {', '.join(f'`{a}`' for a in unknown)} ha"
                 f"{'s' if len(unknown) == 1 else 've'} no run yet.")
              + f" {with_cpu} of the {len(cells)} runs record their stages' CPU seconds (and the embeddings they built), "
              "which neither a pause nor "
              "sharing the cores inflates, and are counted by them; the others by wall-clock seconds, an overstatement "
              "where they shared the two cores with other jobs (tests, searches) or were paused."]
    return "\n".join(lines) + "\n"


def run_seconds(r: dict) -> float:
    """A run's seconds, all stages (the embedding where this run built it): CPU seconds where the stage has them."""
    return sum(t.get("cpu_seconds", t.get("seconds", 0.0)) for t in r.get("timings", {}).values() if isinstance(t, dict))


def search_cost(results: Path, records: list[dict] | None = None) -> str:
    """The worst-case searches' cost (`bench.tools.search`, results/search/*/): per search its N trials (each trial's
    seconds as the search measured them: wall clock, with two one-thread workers on two cores) and its exported
    attack's fresh-seed re-run (the records' stage seconds); the totals in core-hours and, with two one-thread
    workers, in hours of wall time."""
    import csv

    from bench.tools.search import rerun_records
    folder = results / "search"
    searches = sorted(p.parent for p in folder.glob("*/best.json")) if folder.is_dir() else []
    if not searches:
        return "No searches here yet (`bash scripts/tiny_search.sh`).\n"
    records = read_records(results) if records is None else records
    lines = ["| search | trials (N) | trial seconds, median [min, max] | trials, total s | re-run | re-run, total s |",
             "|---|---|---|---|---|---|"]
    trials_s = rerun_s = 0.0
    for path in searches:
        summary = json.loads((path / "best.json").read_text())
        with open(path / "trials.csv", newline="") as f:
            secs = [float(row["seconds"]) for row in csv.DictReader(f) if row.get("seconds")]
        reruns = rerun_records(summary, records)
        spent = sum(run_seconds(r) for r in reruns)
        trials_s, rerun_s = trials_s + sum(secs), rerun_s + spent
        spread = f"{statistics.median(secs):.0f} [{min(secs):.0f}, {max(secs):.0f}]" if secs else ""
        lines.append(f"| `{path.name}` | {len(secs)} | {spread} | {sum(secs):.0f} | {len(reruns)} runs | {spent:.0f} |")
    total = trials_s + rerun_s
    lines += ["", f"{len(searches)} searches: **trials {trials_s / 3600:.2f} core-hours, re-runs {rerun_s / 3600:.2f}, "
                  f"together {total / 3600:.2f} core-hours, about {total / 7200:.1f} h of wall time in two one-thread "
                  "workers** on two cores (a trial's seconds are its wall clock as the search timed it; a re-run's are "
                  "its records' stage seconds, CPU seconds where recorded)."]
    return "\n".join(lines) + "\n"


def fill(path: Path, name: str, text: str) -> None:
    doc = path.read_text()
    begin, end = f"<!-- {name}: begin -->", f"<!-- {name}: end -->"
    if begin not in doc or end not in doc:
        raise SystemExit(f"error: {path} has no {begin} ... {end} block to fill; add the two markers where "
                         "the table goes.")
    head, rest = doc.split(begin, 1)
    path.write_text(head + begin + "\n" + text + end + rest.split(end, 1)[1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--suite", type=Path, help="a results folder of the tiny suite: its cost from its own records")
    ap.add_argument("--before", type=Path)
    ap.add_argument("--after", type=Path)
    ap.add_argument("--records", type=Path, default=ROOT / "results" / "reference" / "records")
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--write", type=Path, help="a markdown file with <!-- suite-cost: begin/end --> markers")
    args = ap.parse_args()
    if args.suite:
        records = read_records(args.suite)
        text = measured(*suite_records(args.suite, args.seeds, records), args.seeds)
        print(text)
        searches = search_cost(args.suite, records)
        print(searches)
        if args.write:
            fill(args.write, "suite-records", text)
            fill(args.write, "search-cost", searches)
        return
    if not (args.before and args.after):
        ap.error("give --suite RESULTS_DIR, or both --before and --after (scripts/profile_runs.py --json figures)")
    methods, attacks = suite(ROOT / "conf")
    before, after = runs(args.before), runs(args.after)
    profiled = next(iter(before.values()))["method"]
    cells, embeds = record_cells(args.records)
    factors = method_factors(cells, methods, profiled)
    text = render(estimate(methods, attacks, args.seeds, before, factors, embeds),
                  estimate(methods, attacks, args.seeds, after, factors, embeds), before, after, factors, args.seeds,
                  len(methods), len(attacks))
    print(text)
    if args.write:
        fill(args.write, "suite-cost", text)


if __name__ == "__main__":
    main()
