"""Keras progress bars for the library's long steps."""

import sys


def progress_bar(verbose, target, title, unit_name="step"):
    """A ``keras.utils.Progbar`` over ``target`` steps, or None.

    Args:
        verbose: 1 shows the bar, 0 nothing; ``"auto"`` shows it when
            standard output is a terminal (not in logs, pipes or doctests).
        target: the number of steps, or None when unknown.
        title: a line printed above the bar.
        unit_name: what a step is (``"batch"``, ``"layer"``).

    Returns:
        The bar (call ``update(done)``), or None when silent.

    Example:

    >>> progress_bar(0, 10, "Working") is None
    True
    """
    if verbose == "auto":
        verbose = int(sys.stdout.isatty())
    if not verbose:
        return None
    import keras

    print(title)
    return keras.utils.Progbar(target, unit_name=unit_name)
