"""Command line: ``python -m benchmarks {list,run}``.

Examples::

    python -m benchmarks list
    python -m benchmarks run --suite grid
    python -m benchmarks run --suite zoo --quick
    python -m benchmarks run --suite grid --update-results

A run writes its tables to ``artifacts/benchmark_results/``;
``--update-results`` replaces the committed ones in ``benchmarks/results/``.
"""

import argparse
import inspect
import pathlib
import sys

from benchmarks import harness
from benchmarks import suites

# Runs land here unless asked to replace the committed results.
SCRATCH_DIR = pathlib.Path("artifacts") / "benchmark_results"


def _parser():
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="Runs aimet_keras benchmark suites and writes Markdown "
        "and JSON results.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("list", help="list the suites")
    run = commands.add_parser("run", help="run one suite")
    run.add_argument(
        "--suite",
        required=True,
        choices=sorted(suites.SUITES),
        help="the suite",
    )
    run.add_argument(
        "--quick",
        action="store_true",
        help="smaller sizes for a smoke run; writes <suite>-quick.md/.json",
    )
    run.add_argument(
        "--only",
        action="append",
        metavar="NAME",
        help="run only this model of a suite that takes model names "
        "(repeatable); the results are written as <suite>-<NAME>...",
    )
    run.add_argument(
        "--results-dir",
        default=None,
        help=f"where to write results (default: {SCRATCH_DIR}, or "
        f"{harness.RESULTS_DIR} with --update-results)",
    )
    run.add_argument(
        "--update-results",
        action="store_true",
        help="replace the committed results in "
        f"{harness.RESULTS_DIR} (a run writes to {SCRATCH_DIR} otherwise)",
    )
    return parser


def main(argv=None):
    """Parses ``argv`` and runs the command; returns the exit status."""
    args = _parser().parse_args(argv)
    if args.command == "list":
        for name, description in suites.SUITES.items():
            print(f"{name:8s} {description}")
        return 0
    module = suites.get_suite(args.suite)
    options = {"quick": args.quick}
    # A suite that makes shipped files takes the flag too.
    if "update_results" in inspect.signature(module.run).parameters:
        options["update_results"] = args.update_results
    if args.only:
        if "names" not in inspect.signature(module.run).parameters:
            print(
                f"Suite {args.suite!r} runs all its models; drop --only.",
                file=sys.stderr,
            )
            return 2
        options["names"] = tuple(args.only)
    report = module.run(**options)
    if args.only:
        # A partial run must not replace the whole suite's results.
        report.suite = "-".join((report.suite, *args.only))
    machine = harness.machine_info()
    print(report.to_markdown(machine))
    directory = args.results_dir or (
        harness.RESULTS_DIR if args.update_results else SCRATCH_DIR
    )
    md_path, json_path = harness.write_results(report, directory, machine)
    print(f"Wrote {md_path} and {json_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
