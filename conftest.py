"""Shared pytest setup: names the docstring examples use without importing."""

import numpy as np
import pytest


@pytest.fixture(autouse=True)
def _doctest_names(doctest_namespace):
    import tensorflow as tf

    from aimet_keras import quant
    from aimet_keras import zoo

    doctest_namespace.update(np=np, tf=tf, quant=quant, zoo=zoo)
    doctest_namespace.update(
        {name: getattr(quant, name) for name in quant.__all__}
    )
    doctest_namespace.update(
        load_fashion_mnist_slice=zoo.load_fashion_mnist_slice
    )
    from aimet_keras import export
    from aimet_keras import sim

    doctest_namespace.update(
        {name: getattr(sim, name) for name in sim.__all__},
        keras=__import__("keras"),
    )

    doctest_namespace.update(
        {name: getattr(export, name) for name in export.__all__}
    )
