"""How long the leaderboard takes to re-aggregate a big records folder (a benchmark, not a test).

    .venv/bin/python scripts/leaderboard_speed.py [RESULTS_DIR] [N]

Copies the records of RESULTS_DIR (default results) into a scratch folder, repeating them under new
seeds until there are at least N (default 300), then times `bench.analysis.leaderboard.write_leaderboard` on
it twice (CSV, markdown, survival table, plots and report: cold, then with the unchanged figures kept) and
the whole `python -m bench.tools.leaderboard` command once, and prints the seconds.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.analysis.leaderboard import write_leaderboard  # noqa: E402
from bench.record import load_records, write_record  # noqa: E402


def main() -> None:
    source = Path(sys.argv[1] if len(sys.argv) > 1 else "results")
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 300
    records = [r for r in load_records(source)]
    if not records:
        sys.exit(f"no records under {source}")
    scratch = Path(tempfile.mkdtemp(prefix="leaderboard-speed-"))
    count, copy = 0, 0
    while count < n:
        for rec in records:
            clone = json.loads(json.dumps(rec))
            clone["seed"] = rec["seed"] + 100 * copy
            clone["run_id"] = f"{rec['run_id']}-copy{copy}"
            write_record(scratch / "records" / clone["run_id"] / "record.json", clone)
            count += 1
        copy += 1
    times = []
    for _ in range(2):  # cold (every figure drawn), then warm (figures of unchanged rows are kept)
        start = time.perf_counter()
        df = write_leaderboard(scratch)
        times.append(time.perf_counter() - start)
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "bench.tools.leaderboard", str(scratch)], check=True, capture_output=True)
    cli = time.perf_counter() - start
    print(f"{count} records -> {len(df)} rows: write_leaderboard (CSV, markdown, survival, plots, report) "
          f"{times[0]:.2f} s cold, {times[1]:.2f} s warm; `python -m bench.tools.leaderboard` {cli:.2f} s wall "
          f"(imports included), from {source}")
    shutil.rmtree(scratch)


if __name__ == "__main__":
    main()
