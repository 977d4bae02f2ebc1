"""One training command for every task, on the user's own file:

    python -m training.train TASK --data FILE --name NAME [--out DIR] [--version V] [--max-epochs N]
                             [--model ARCH] [--dry-run] [...task options]

TASK is one of the modules in training/byo/ (classification, ner, translation, recommendation). Each
validates the file first (line-numbered errors), splits it deterministically, trains through the shared
loop, evaluates on the held-out split through the served pipeline against a baseline, and publishes a
version the server loads with no code change. docs/your-own-models.md is the tutorial.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from training.byo.common import DataFileError

TASKS = ("classification", "ner", "translation", "recommendation")


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="python -m training.train", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    tasks = parser.add_subparsers(dest="task", required=True, metavar="TASK")
    modules = {}
    for task in TASKS:
        try:
            module = importlib.import_module(f"training.byo.{task}")
        except ModuleNotFoundError as exc:
            if exc.name != f"training.byo.{task}":
                raise
            continue  # a task not built yet
        modules[task] = module
        module.add_arguments(tasks.add_parser(task, help=module.__doc__.splitlines()[0] if module.__doc__ else task))
    args = parser.parse_args(argv)
    for flag in ("data", "target_data", "items"):
        path = getattr(args, flag, None)
        if path is not None and not path.is_file():
            what = "is a folder, not a file" if path.is_dir() else "does not exist"
            print(f"error: --{flag.replace('_', '-')} {path} {what}", file=sys.stderr)
            return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return int(modules[args.task].run(args))
    except DataFileError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
