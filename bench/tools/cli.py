"""What every `python -m bench.tools.<name>` command shares, so that they all behave alike.

* the config: `bench.config.compose(overrides)` (conf/ with Hydra overrides, no app run);
* errors: a `BenchError` or a Hydra config error is printed as its one paragraph and the command exits 2,
  having written nothing (every output goes through `bench.cache.write_text_atomic` / `write_json_atomic`);
* logging: `[name] message` lines on stderr.

A tool is a module with `main = command(_main)` and `if __name__ == "__main__": sys.exit(main())`.
"""
from __future__ import annotations

import functools
import logging
import sys
from typing import Callable, Sequence

from bench.errors import BenchError

LOG_FORMAT = "[%(name)s] %(message)s"


def fail(err: Exception) -> int:
    """Print a user-facing error as its one paragraph; the exit status of a refused command."""
    print(f"\nerror: {err}\n", file=sys.stderr)
    return 2


def command(body: Callable[[list[str]], int | None]) -> Callable[[Sequence[str] | None], int]:
    """A tool's `main(argv=None) -> exit status` from `body(argv)`: argv defaults to the command line, a
    BenchError or Hydra config error is one paragraph and status 2, and None means success."""
    @functools.wraps(body)
    def main(argv: Sequence[str] | None = None) -> int:
        from hydra.errors import HydraException
        logging.basicConfig(level=logging.INFO, format=LOG_FORMAT)
        try:
            status = body(list(sys.argv[1:] if argv is None else argv))
        except (BenchError, HydraException) as err:
            return fail(err)
        return 0 if status is None else status
    return main


def write_table(folder, name: str, table, floatfmt: str = ".3g") -> None:
    """A tool's table as `name`.csv and `name`.md (markdown, `floatfmt`) in `folder`, each written atomically."""
    from bench.cache import write_text_atomic
    write_text_atomic(folder / f"{name}.csv", table.to_csv(index=False))
    write_text_atomic(folder / f"{name}.md", table.to_markdown(index=False, floatfmt=floatfmt) + "\n")
