"""Benchmarks for aimet_keras: speed and accuracy against in-process baselines.

Run a suite with ``python -m benchmarks run --suite NAME [--quick]`` from the
repository root; ``python -m benchmarks list`` names the suites. Each run
prints Markdown tables and writes ``benchmarks/results/<suite>.md`` and
``<suite>.json`` (``<suite>-quick.*`` for ``--quick`` smoke runs).

The shared pieces (timing, tables, result files) are in
:mod:`benchmarks.harness`; each suite is one module in
:mod:`benchmarks.suites` with a ``run(quick)`` function returning a
:class:`benchmarks.harness.Report`.
"""
