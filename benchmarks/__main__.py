"""Command line: ``python -m benchmarks {list,run}``.

Examples::

    python -m benchmarks list
    python -m benchmarks run --suite grid
    python -m benchmarks run --suite zoo --quick
"""

import argparse
import sys

from benchmarks import harness
from benchmarks import suites


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
        "--results-dir",
        default=None,
        help=f"where to write results (default: {harness.RESULTS_DIR})",
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
    report = module.run(quick=args.quick)
    machine = harness.machine_info()
    print(report.to_markdown(machine))
    md_path, json_path = harness.write_results(
        report, args.results_dir, machine
    )
    print(f"Wrote {md_path} and {json_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
