"""Least-squares reconstruction of a layer from sampled activations.

Channel pruning (He et al. 2017) and the data-aware variant of SVD share one
step: a linear layer ``L`` (Conv2D or Dense) is given new kernel values so
that, on data, its output matches a reference layer's output (the original
model's), from the inputs ``L`` actually receives in the compressed model.
On a convolution's input, the patches that make one output position are a
row of a matrix ``X`` ``(samples, k * channels)``; with the reference's
bias-free output ``Y`` at the same positions, the kernel is
``argmin ||Y - X W||``.

As in AIMET, a few output positions are drawn per image (10), from a few
hundred images; the positions depend only on a key (the layer's name in
the original model) so that every model sampled for the same layer is
sampled at the same places.
"""

from __future__ import annotations

import math
import zlib

import keras
import numpy as np

from aimet_keras.graph import prepare as prepare_lib

__all__ = ["LayerSampler", "refit_layers"]

SAMPLES_PER_IMAGE = 10


def input_images(data, count):
    """Up to ``count`` model inputs from an array or a ``tf.data`` set."""
    import tensorflow as tf

    if isinstance(data, tf.data.Dataset):
        batches, total = [], 0
        for element in data:
            if isinstance(element, (tuple, list)):
                element = element[0]
            batch = np.asarray(element)
            batches.append(batch)
            total += len(batch)
            if total >= count:
                break
        if not batches:
            raise ValueError("The reconstruction data set is empty.")
        return np.concatenate(batches)[:count]
    if isinstance(data, (tuple, list)) and len(data) == 2:
        data = data[0]
    images = np.asarray(data)
    if images.ndim == 0 or len(images) == 0:
        raise ValueError(
            "The reconstruction data is empty; give model inputs (an array "
            "or a tf.data.Dataset of batches)."
        )
    return images[:count]


def patches(layer, inputs):
    """``layer``'s input patches: ``(batch, out_h, out_w, k, channels)``
    for a Conv2D, ``(..., 1, channels)`` for a Dense layer."""
    import tensorflow as tf

    if not hasattr(layer, "kernel_size"):  # Dense
        values = np.asarray(inputs)
        return values.reshape(values.shape[:-1] + (1, values.shape[-1]))
    kh, kw = layer.kernel_size
    found = tf.image.extract_patches(
        inputs,
        sizes=[1, kh, kw, 1],
        strides=[1, *layer.strides, 1],
        rates=[1, *layer.dilation_rate, 1],
        padding=layer.padding.upper(),
    ).numpy()
    channels = inputs.shape[-1]
    return found.reshape(found.shape[:3] + (kh * kw, channels))


def kernel_matrix(layer):
    """The kernel as ``(k, in channels, out channels)``, float64."""
    kernel = np.asarray(layer.kernel.numpy(), np.float64)
    return kernel.reshape(-1, kernel.shape[-2], kernel.shape[-1])


def least_squares_kernel(inputs, targets, kernel_shape, dtype="float32"):
    """``argmin ||targets - inputs W||`` shaped as a kernel.

    Args:
        inputs: ``(samples, k, channels)`` patches.
        targets: ``(samples, out channels)``.
        kernel_shape: the layer's kernel shape (its input channels must be
            ``channels``).
        dtype: the kernel's dtype. Defaults to float32.

    Returns:
        The kernel, an array of ``kernel_shape``.
    """
    design = inputs.reshape(len(inputs), -1)
    solution = np.linalg.lstsq(design, targets, rcond=None)[0]
    return solution.reshape(kernel_shape).astype(dtype)


class LayerSampler:
    """A layer's input patches and output at fixed random positions.

    Args:
        data: model inputs: an array, or a ``tf.data`` set of batches (or
            of ``(inputs, labels)``).
        num_samples: output positions per layer, 10 per image. Defaults to
            5000.
        seed: the positions' random seed. Defaults to 0.

    Example:

    >>> inputs = keras.Input((8, 8, 3))
    >>> model = keras.Model(inputs, keras.layers.Conv2D(4, 3, name="c")(inputs))
    >>> sampler = LayerSampler(np.random.rand(20, 8, 8, 3), num_samples=150)
    >>> sampler.inputs(model, "c").shape, sampler.outputs(model, "c").shape
    ((150, 9, 3), (150, 4))
    """

    def __init__(
        self, data: object, num_samples: int = 5000, seed: int = 0
    ) -> None:
        if not isinstance(num_samples, int) or num_samples < 1:
            raise ValueError(
                f"num_reconstruction_samples={num_samples!r}; use a positive "
                "int."
            )
        self.images = input_images(
            data, math.ceil(num_samples / SAMPLES_PER_IMAGE)
        )
        self.num_samples = num_samples
        self.seed = seed

    def positions(
        self, key: str, grid: tuple[int, int, int]
    ) -> tuple[np.ndarray, ...]:
        """Sampled ``(image, row, column)`` index arrays on an output
        ``grid`` ``(images, rows, columns)``, the same for the same key."""
        count, rows, columns = grid
        rng = np.random.default_rng([self.seed, zlib.crc32(key.encode())])
        per_image = min(SAMPLES_PER_IMAGE, rows * columns)
        picks = np.stack(
            [
                rng.choice(rows * columns, per_image, replace=False)
                for _ in range(count)
            ]
        )
        images = np.repeat(np.arange(count), per_image)
        flat = picks.reshape(-1)
        chosen = (images, flat // columns, flat % columns)
        return tuple(axis[: self.num_samples] for axis in chosen)

    def layer_input(self, model: keras.Model, name: str) -> np.ndarray:
        """``name``'s whole input in ``model`` for the sampled images."""
        # A layer reused by a rebuilt model has several inputs: take the one
        # of this model's graph.
        (tensor,) = [
            site.inputs[0]
            for site in prepare_lib.walk(model)
            if site.operation.name == name
        ]
        probe = keras.Model(model.inputs, tensor)
        return probe.predict(self.images, batch_size=128, verbose=0)

    def inputs(
        self, model: keras.Model, name: str, key: str | None = None
    ) -> np.ndarray:
        """``(samples, k, channels)``: ``name``'s input patches in
        ``model`` at the positions of ``key`` (default: ``name``)."""
        layer = model.get_layer(name)
        found = patches(layer, self.layer_input(model, name))
        if found.ndim == 3:  # Dense on vectors: one position per image
            return np.asarray(found[: self.num_samples], np.float64)
        return np.asarray(
            found[self.positions(key or name, found.shape[:3])], np.float64
        )

    def outputs(
        self, model: keras.Model, name: str, key: str | None = None
    ) -> np.ndarray:
        """``(samples, out channels)``: ``name``'s bias-free output."""
        return np.einsum(
            "nkc,kco->no",
            self.inputs(model, name, key),
            kernel_matrix(model.get_layer(name)),
        )


def refit_layers(
    model: keras.Model,
    reference: keras.Model,
    pairs: dict[str, str],
    sampler: LayerSampler,
    targets: dict[str, np.ndarray] | None = None,
) -> keras.Model:
    """Refits layers of ``model``, in place, to reference layers' outputs.

    In graph order, each layer's kernel becomes the least-squares fit from
    its inputs in ``model`` (so earlier refits are seen) to the bias-free
    output of its reference layer in ``reference``.

    Args:
        model: a functional model whose layers may be changed (a fresh one).
        reference: the model to match.
        pairs: ``{layer name in model: reference layer name}``; each pair
            has the same output positions and channels.
        sampler: a :class:`LayerSampler`.
        targets: an optional cache ``{reference name: outputs}``.

    Returns:
        ``model``.
    """
    targets = {} if targets is None else targets
    order = [site.operation.name for site in prepare_lib.walk(model)]
    for name in sorted(pairs, key=order.index):
        source = pairs[name]
        if source not in targets:
            targets[source] = sampler.outputs(reference, source)
        layer = model.get_layer(name)
        layer.kernel.assign(
            least_squares_kernel(
                sampler.inputs(model, name, key=source),
                targets[source],
                tuple(layer.kernel.shape),
                layer.kernel.dtype,
            )
        )
    return model
