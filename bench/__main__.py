"""`python -m bench run [--quick] [--out FILE] [--no-peer] [--pause-training]`;
`python -m bench floor [--quick] [--rounds N] [--echo-variants] [--baseline-code DIR]`: section 8 alone
(seqserve vs a bare grpc.aio echo); `python -m bench scheduling [--quick]`: section 9 alone (translation,
iteration-level vs batch at a time)."""

from __future__ import annotations

import argparse
import dataclasses
import pathlib
import sys
from collections.abc import Sequence

from bench import translation_scheduling
from bench.floor import floor_lines, run_floor
from bench.report import write_report
from bench.run import run_bench
from bench.scenarios import FULL, QUICK, Plan
from bench.servers import REPO


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench")
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="run the benchmarks and write the report")
    run.add_argument("--quick", action="store_true", help="seconds, not minutes: one short round, no peer")
    run.add_argument("--out", type=pathlib.Path, default=None,
                     help="report path (default docs/benchmarks.md; quick: .cache/bench/quick/benchmarks.md)")
    run.add_argument("--peer", action=argparse.BooleanOptionalAction, default=None,
                     help="compare with MLServer (default: on, off in quick mode)")
    run.add_argument("--pause-training", action="store_true",
                     help="SIGSTOP the background training jobs for the run (always resumed)")
    floor = commands.add_parser("floor", help="seqserve vs a bare grpc.aio echo only; prints the table")
    floor.add_argument("--quick", action="store_true", help="one short round")
    floor.add_argument("--rounds", type=int, default=None,
                       help="interleaved rounds (default 5); more steady the medians on a busy machine")
    floor.add_argument("--echo-variants", action="store_true",
                       help="also the echo on other server designs: aio with 3 interceptors, the sync server "
                            "(4 and 16 threads), a hand-off to a thread per batch (bench/peer/echo.py)")
    floor.add_argument("--baseline-code", type=pathlib.Path, default=None,
                       help="also run a seqserve from this source tree (e.g. `git archive` of an earlier commit)")
    scheduling = commands.add_parser("scheduling", help="section 9 alone (translation scheduling); prints it")
    scheduling.add_argument("--quick", action="store_true", help="seconds: one short round")
    args = parser.parse_args(argv)
    if args.command == "scheduling":
        return translation_scheduling.main(["--quick"] if args.quick else [])
    if args.command == "floor":
        plan = QUICK if args.quick else FULL
        if args.rounds is not None:
            if args.rounds < 1:
                parser.error("--rounds: at least 1")
            plan = dataclasses.replace(plan, reps=args.rounds)
        return floor_command(plan, args.baseline_code, args.echo_variants)
    plan = QUICK if args.quick else FULL
    out = args.out or (REPO / ".cache/bench/quick/benchmarks.md" if args.quick else REPO / "docs/benchmarks.md")
    results = run_bench(plan, peer=plan.peer if args.peer is None else args.peer, pause_training=args.pause_training)
    goals = write_report(results, out, "quick" if args.quick else "full")
    for goal in goals:
        print(f"{'met    ' if goal.met else 'NOT MET'}  {goal.goal}: {goal.measured}")
    print(f"failed calls: {results.outcome.failed_calls}; report: {out}")
    for error in results.outcome.errors:
        print(f"error: {error}", file=sys.stderr)
    return 1 if results.outcome.errors else 0


def floor_command(plan: Plan, baseline_code: pathlib.Path | None, echo_variants: bool = False) -> int:
    table, model_ms, outcome = run_floor(plan, baseline_code, echo_variants)
    print("\n".join(floor_lines(table, model_ms)))
    for error in outcome.errors:
        print(f"error: {error}", file=sys.stderr)
    return 1 if outcome.errors else 0


if __name__ == "__main__":
    sys.exit(main())
