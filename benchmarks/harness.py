"""The pieces every benchmark suite shares: timing, tables and result files.

Timing follows the design's rules for shared, noisy machines: warm up first
(the first call of a ``tf.function`` traces and compiles), take the median of
at least five runs, and report ratios against a baseline measured in the same
process. :func:`time_interleaved` alternates the candidates within each round,
so that slow drift in the machine's load hits baseline and candidate alike.

A suite returns a :class:`Report` (a few :class:`Table` objects plus the
settings it ran with); :func:`write_results` renders it to
``<suite>.md`` and ``<suite>.json`` atomically.

Example:

>>> table = Table("Demo", ["op", "ms"], [["add", 1.23456]])
>>> print(table.to_markdown())
### Demo
<BLANKLINE>
| op  | ms    |
|-----|-------|
| add | 1.235 |
"""

import dataclasses
import datetime
import json
import math
import os
import pathlib
import platform
import statistics
import tempfile
import time

__all__ = [
    "MIN_REPEATS",
    "Report",
    "Table",
    "format_cell",
    "machine_info",
    "load_reference_model",
    "markdown_table",
    "ratio",
    "time_interleaved",
    "time_median",
    "write_results",
]

# The design asks for the median of at least five runs.
MIN_REPEATS = 5
RESULTS_DIR = pathlib.Path(__file__).parent / "results"


def time_interleaved(fns, repeats=MIN_REPEATS, warmup=1):
    """Times several callables in alternating rounds.

    Every callable is first called ``warmup`` times (untimed), then each round
    calls every callable once, in order, timing each call with
    ``time.perf_counter``. Interleaving keeps a baseline and its candidates
    under the same machine load.

    The callables must block until their work is done; TensorFlow calls on
    CPU do.

    Args:
        fns: a dict from name to a callable taking no arguments.
        repeats: timed rounds, at least 5. Defaults to 5.
        warmup: untimed calls of each callable before timing, at least 1.
            Defaults to 1.

    Returns:
        A dict from name to the list of per-call times in seconds.

    Raises:
        ValueError: for fewer than 5 repeats or no warmup.

    Example:

    >>> times = time_interleaved({"a": lambda: None, "b": lambda: None})
    >>> sorted(times), len(times["a"])
    (['a', 'b'], 5)
    """
    if repeats < MIN_REPEATS:
        raise ValueError(
            f"repeats={repeats}: the median needs at least {MIN_REPEATS} runs."
        )
    if warmup < 1:
        raise ValueError(
            f"warmup={warmup}: warm up at least once, since the first call "
            "traces and compiles."
        )
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    samples = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            samples[name].append(time.perf_counter() - start)
    return samples


def time_median(fn, repeats=MIN_REPEATS, warmup=1):
    """The median time of ``fn`` in seconds, after warming it up.

    Args:
        fn: a callable taking no arguments.
        repeats: timed runs, at least 5. Defaults to 5.
        warmup: untimed calls first, at least 1. Defaults to 1.

    Returns:
        A positive float, seconds.

    Example:

    >>> time_median(lambda: sum(range(1000))) > 0
    True
    """
    return statistics.median(
        time_interleaved({"fn": fn}, repeats, warmup)["fn"]
    )


def ratio(candidate, baseline):
    """``candidate / baseline``, or None when the baseline is not positive.

    Example:

    >>> ratio(3.0, 1.5)
    2.0
    """
    if candidate is None or not baseline or baseline <= 0:
        return None
    return candidate / baseline


def format_cell(value, spec=None):
    """Formats one table cell for Markdown.

    None prints as an em dash, floats with ``spec`` (a ``str.format`` spec
    such as ``"{:.2f}"``) or four significant digits, booleans as yes/no.

    Example:

    >>> format_cell(0.123456), format_cell(None), format_cell(2.5, "{:.1f}x")
    ('0.1235', '—', '2.5x')
    """
    if hasattr(value, "item") and not isinstance(value, str):
        value = value.item()  # numpy scalars
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if spec is not None and isinstance(value, (int, float)):
        return spec.format(value)
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value).replace("|", "\\|").replace("\n", " ")


def markdown_table(columns, rows, formats=None):
    """Renders rows as a GitHub Markdown table with padded columns.

    Args:
        columns: the header names.
        rows: sequences of cell values, one per column.
        formats: optional dict from column name to a ``str.format`` spec
            applied to that column's numbers.

    Returns:
        The table as a string, without a trailing newline.

    Raises:
        ValueError: when a row's length differs from the header's.

    Example:

    >>> print(markdown_table(["x", "y"], [[1, 2.0]], {"y": "{:.1f}"}))
    | x | y   |
    |---|-----|
    | 1 | 2.0 |
    """
    formats = formats or {}
    text_rows = []
    for row in rows:
        if len(row) != len(columns):
            raise ValueError(
                f"Row {list(row)!r} has {len(row)} cells; the table has "
                f"{len(columns)} columns {list(columns)!r}."
            )
        text_rows.append(
            [format_cell(v, formats.get(c)) for c, v in zip(columns, row)]
        )
    header = [format_cell(c) for c in columns]
    widths = [
        max([len(header[i])] + [len(r[i]) for r in text_rows])
        for i in range(len(columns))
    ]

    def line(cells):
        return (
            "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths)) + " |"
        )

    rule = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(header), rule] + [line(r) for r in text_rows])


@dataclasses.dataclass
class Table:
    """One result table: a title, columns, rows and notes below it.

    Cells keep their raw values (numbers stay numbers in the JSON); only the
    Markdown rendering formats them.

    Attributes:
        title: a heading.
        columns: header names.
        rows: lists of cell values.
        notes: sentences printed under the table.
        formats: column name to a ``str.format`` spec for the Markdown.
    """

    title: str
    columns: list
    rows: list = dataclasses.field(default_factory=list)
    notes: list = dataclasses.field(default_factory=list)
    formats: dict = dataclasses.field(default_factory=dict)

    def add_row(self, *cells):
        """Appends a row; returns ``self`` for chaining."""
        self.rows.append(list(cells))
        return self

    def to_markdown(self):
        """The table as Markdown: a heading, the table, then its notes."""
        table = markdown_table(self.columns, self.rows, self.formats)
        parts = [f"### {self.title}", "", table]
        if self.notes:
            parts.append("")
            parts.extend(f"- {note}" for note in self.notes)
        return "\n".join(parts)

    def to_json(self):
        """A JSON-able dict; each row becomes a column-name-keyed dict."""
        return {
            "title": self.title,
            "columns": list(self.columns),
            "rows": [dict(zip(self.columns, row)) for row in self.rows],
            "notes": list(self.notes),
        }


@dataclasses.dataclass
class Report:
    """What one suite run produces.

    Attributes:
        suite: the suite name.
        tables: the :class:`Table` objects, in order.
        settings: the parameters the suite ran with (sizes, repeats, ...).
        quick: whether this was a ``--quick`` smoke run.
        extra: further JSON-able data (raw timing samples, ...).
    """

    suite: str
    tables: list = dataclasses.field(default_factory=list)
    settings: dict = dataclasses.field(default_factory=dict)
    quick: bool = False
    extra: dict = dataclasses.field(default_factory=dict)

    def to_markdown(self, machine=None):
        """The whole report as a Markdown document."""
        title = f"## Benchmark `{self.suite}`" + (
            " (quick)" if self.quick else ""
        )
        parts = [title, ""]
        if machine:
            parts.append(
                f"{machine['date_utc']}; TensorFlow {machine['tensorflow']}, "
                f"Keras {machine['keras']}, Python {machine['python']}, "
                f"{machine['cpus_usable']} usable CPU(s) of "
                f"{machine['cpu_count']}, load average "
                f"{machine['load_average_1m']}."
            )
            parts.append("")
        if self.settings:
            settings = ", ".join(f"{k}={v}" for k, v in self.settings.items())
            parts.extend([f"Settings: {settings}.", ""])
        for table in self.tables:
            parts.extend([table.to_markdown(), ""])
        return "\n".join(parts)

    def to_json(self, machine=None):
        """A JSON-able dict of the report and the machine it ran on."""
        return {
            "suite": self.suite,
            "quick": self.quick,
            "machine": machine,
            "settings": self.settings,
            "tables": [t.to_json() for t in self.tables],
            "extra": self.extra,
        }


def _export_versions():
    """The ONNX side's versions, read without importing them."""
    import importlib.metadata

    found = {}
    for name in ("onnxruntime", "tf2onnx", "onnx"):
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            pass
    return found


def _integer_features():
    """The x86 flags that pick integer kernels (VNNI or not), from Linux."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            flags = next(
                (line for line in cpuinfo if line.startswith("flags")), ""
            ).split()
    except OSError:
        return None
    wanted = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8")
    return [flag for flag in wanted if flag in flags]


def machine_info():
    """Facts about the run: library versions, CPUs, load and the date.

    TensorFlow and Keras are imported lazily so that the harness itself stays
    importable (and testable) without starting TensorFlow.

    Returns:
        A JSON-able dict.
    """
    import keras
    import numpy as np
    import tensorflow as tf

    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        usable = os.cpu_count()
    try:
        load = round(os.getloadavg()[0], 2)
    except OSError:
        load = None
    return {
        "date_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(
            timespec="seconds"
        ),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "numpy": np.__version__,
        **_export_versions(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "integer_features": _integer_features(),
        "cpu_count": os.cpu_count(),
        "cpus_usable": usable,
        "load_average_1m": load,
        "gpus": [d.name for d in tf.config.list_physical_devices("GPU")],
    }


def _jsonable(value):
    """Numpy scalars and arrays to Python, NaN and infinities to None."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if hasattr(value, "tolist") and not isinstance(value, str):
        return _jsonable(value.tolist())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _write_atomically(path, text):
    """Writes ``text`` to a temporary file beside ``path``, then renames it.

    A failure leaves ``path`` as it was and no temporary file behind.
    """
    fd, tmp = tempfile.mkstemp(
        dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"
    )
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; results are for sharing
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def write_results(report, directory=None, machine=None):
    """Writes ``<name>.md`` and ``<name>.json`` for a report, atomically.

    The name is the suite's, with ``-quick`` appended for quick runs so that a
    smoke run never overwrites the full results. Both documents are rendered
    before either file is touched, and each file is written to a temporary
    file and renamed, so a failure leaves the previous results in place.

    Args:
        report: a :class:`Report`.
        directory: where to write. Defaults to ``benchmarks/results``.
        machine: the :func:`machine_info` dict. Defaults to a fresh one.

    Returns:
        The ``(markdown_path, json_path)`` pair.

    Example:

    >>> import tempfile
    >>> md, js = write_results(Report("demo"), tempfile.mkdtemp(), machine={})
    >>> md.name, js.name
    ('demo.md', 'demo.json')
    """
    directory = pathlib.Path(directory or RESULTS_DIR)
    directory.mkdir(parents=True, exist_ok=True)
    machine = machine_info() if machine is None else machine
    name = report.suite + ("-quick" if report.quick else "")
    markdown = report.to_markdown(machine)
    document = json.dumps(_jsonable(report.to_json(machine)), indent=2) + "\n"
    md_path, json_path = directory / f"{name}.md", directory / f"{name}.json"
    _write_atomically(md_path, markdown)
    _write_atomically(json_path, document)
    return md_path, json_path


def top1_accuracy(model, images, labels, batch_size=500):
    """Top-1 accuracy of a classifier's argmax over its outputs.

    Args:
        model: a ``keras.Model`` returning class scores.
        images: model inputs.
        labels: integer class labels.
        batch_size: inference batch size; it does not change the result.
            Defaults to 500.

    Returns:
        The accuracy as a float in [0, 1].
    """
    import numpy as np

    scores = model.predict(images, batch_size=batch_size, verbose=0)
    return float(np.mean(np.argmax(scores, axis=-1) == labels))


def load_reference_model(name):
    """A trained aimet_keras zoo model, or None when it is not trained yet.

    Args:
        name: ``"resnet"``, ``"mobilenet_v2"`` or ``"transformer"``.

    Returns:
        The ``keras.Model``, not compiled (benchmarks only run inference), or
        None when its ``.keras`` file is not on disk (the reference models
        are trained separately).
    """
    from aimet_keras import zoo

    try:
        return zoo.load_model(name, compile=False)
    except FileNotFoundError:
        return None
