"""The tfmot QAT peer: tensorflow-model-optimization's QAT on a reference model.

Issue 6 asks for a side-by-side of aimet_keras's QAT with "the same
architecture built with ``tf_keras``, QAT with tensorflow-model-optimization,
the same data and epochs": accuracy, and training step time over FP32 step
time, for both. This module is the tfmot side; the project's QAT suite calls
:func:`run_tfmot_qat` and compares.

tfmot 0.8 works only with legacy Keras (``tf_keras``), which TensorFlow
selects when ``TF_USE_LEGACY_KERAS=1`` is set before it is first imported.
The project runs Keras 3, so the work happens in a process of its own:

1. A Keras 3 child process (``--export-reference``) loads the shipped
   ``aimet_keras/zoo/data/<model>.keras`` and writes its weights, keyed by
   layer and variable name, and its probabilities on the 10,000 test images
   to a temporary ``.npz``.
2. The legacy process rebuilds the network with ``tf_keras`` from the
   ``.keras`` file's ``config.json`` (read as plain JSON): the same layers,
   in the same order, with the same names, hyper-parameters and
   connections. Any config entry it cannot carry over exactly is an error,
   not a silent default. It copies the weights by name and checks that its
   probabilities match the Keras 3 model's (max abs difference below
   ``1e-4``), so both sides start from the same FP32 network.
3. FP32 top-1 on the full test set; then ``tfmot.quantization.keras.
   quantize_model`` with the default 8-bit scheme (per-channel symmetric
   weights for Conv2D and DepthwiseConv2D, per-tensor for Dense, asymmetric
   8-bit activations, batch normalization kept unfolded), Adam and sparse
   categorical cross-entropy on the softmax output (the loss the shipped
   models were trained with), ``fit`` with shuffling, and top-1 again.
4. Step time, on copies so the timing steps leave the trained models alone:
   the compiled ``model.train_function`` (what ``fit`` calls once per step)
   runs on fixed batches from an in-memory ``tf.data`` iterator, FP32 and
   QAT interleaved, warmed up, median of at least five repetitions of
   ``--steps-per-repeat`` steps.

Only ``resnet`` and ``mobilenet_v2`` are supported: tfmot has no
QuantizeConfig for ``MultiHeadAttention``, so ``quantize_model`` refuses the
``transformer``.

Usage (from the repository root; the flag sets ``TF_USE_LEGACY_KERAS``
itself when TensorFlow is not imported yet)::

    python -m benchmarks.peers.tfmot_qat --model resnet --epochs 1 \\
        --batch-size 64 --learning-rate 1e-4 --train-limit 2000 \\
        --json out.json

The JSON keys are listed in :data:`RESULT_KEYS`.
"""

import argparse
import collections
import importlib.util
import json
import math
import os
import pathlib
import subprocess
import sys
import tempfile
import time
import zipfile

import numpy as np

__all__ = [
    "MODELS",
    "RESULT_KEYS",
    "LayerSpec",
    "layer_plan",
    "match_weights",
    "parse_args",
    "run_tfmot_qat",
]

MODULE = "benchmarks.peers.tfmot_qat"
REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]
ZOO_DIR = REPO_ROOT / "aimet_keras" / "zoo"
MODELS = ("resnet", "mobilenet_v2")
UNSUPPORTED = {
    "transformer": (
        "tfmot's default 8-bit scheme has no QuantizeConfig for "
        "MultiHeadAttention, so quantize_model refuses the transformer"
    ),
}
# The design's bar for "the same FP32 network" on both sides.
MAX_TRANSFER_DIFF = 1e-4
EVAL_BATCH = 500
DEFAULT_TIMEOUT_S = 4 * 3600
STDERR_TAIL = 4000

RESULT_KEYS = (
    "model",
    "epochs",
    "batch_size",
    "learning_rate",
    "train_images",
    "test_images",
    "keras3_fp32_accuracy",
    "fp32_accuracy",
    "qat_accuracy",
    "fp32_step_ms",
    "qat_step_ms",
    "step_time_ratio",
    "weight_transfer_max_abs_diff",
    "fit_seconds",
    "estimated_full_epoch_seconds",
    "timing",
    "scheme",
    "quantize_configs",
    "versions",
    "cpus_usable",
    "wall_seconds",
)

LayerSpec = collections.namedtuple(
    "LayerSpec", ["name", "class_name", "kwargs", "inputs"]
)
LayerSpec.__doc__ = """One layer to rebuild with tf_keras.

``kwargs`` go to the tf_keras layer class of the same name; ``inputs`` is
None for an input layer, a layer name for one input, or a list of names
(``Add``).
"""

# Per Keras 3 class, the config keys that decide what the layer computes;
# the tf_keras class of the same name takes them under the same names.
_HYPERPARAMETERS = {
    "Conv2D": (
        "filters",
        "kernel_size",
        "strides",
        "padding",
        "data_format",
        "dilation_rate",
        "groups",
        "activation",
        "use_bias",
    ),
    "DepthwiseConv2D": (
        "kernel_size",
        "strides",
        "padding",
        "depth_multiplier",
        "data_format",
        "dilation_rate",
        "activation",
        "use_bias",
    ),
    "BatchNormalization": ("axis", "momentum", "epsilon", "center", "scale"),
    "ReLU": ("max_value", "negative_slope", "threshold"),
    "Add": (),
    "GlobalAveragePooling2D": ("data_format", "keepdims"),
    "Dense": ("units", "activation", "use_bias"),
    "Softmax": ("axis",),
}
# Keys whose Keras 3 value is also tf_keras's behaviour only at this value;
# anything else would change the network, so it is refused.
_NEUTRAL = {
    "trainable": True,
    "synchronized": False,
    "renorm": False,
    "renorm_clipping": None,
    "quantization_config": None,
    "sparse": False,
    "ragged": False,
    "optional": False,
}
# Used only with renorm=True, which _NEUTRAL already insists is off.
_IGNORED = ("name", "renorm_momentum")
# tf_keras variable names that Keras 3 spells differently.
_WEIGHT_ALIASES = {"depthwise_kernel": "kernel"}


def _dtype_name(dtype):
    if isinstance(dtype, dict):  # a Keras 3 DTypePolicy
        return dtype.get("config", {}).get("name")
    return dtype


def _layer_kwargs(layer):
    """The tf_keras constructor arguments for one Keras 3 layer config."""
    class_name, config = layer["class_name"], layer["config"]
    where = f"layer {layer['name']!r} ({class_name})"
    if class_name == "InputLayer":
        allowed = ("batch_shape", "dtype", "name", *_NEUTRAL)
    elif class_name in _HYPERPARAMETERS:
        allowed = _HYPERPARAMETERS[class_name]
    else:
        raise ValueError(
            f"{where}: no tf_keras translation for {class_name}; supported: "
            f"InputLayer, {', '.join(_HYPERPARAMETERS)}."
        )
    kwargs = {}
    for key, value in config.items():
        if key in _IGNORED or key.endswith("_initializer"):
            continue  # initializers do not matter: the weights are copied
        if key == "dtype":
            if _dtype_name(value) != "float32":
                raise ValueError(f"{where}: dtype {value!r} is not float32.")
        elif key in _NEUTRAL:
            if value != _NEUTRAL[key]:
                raise ValueError(
                    f"{where}: {key}={value!r} is not supported; only "
                    f"{_NEUTRAL[key]!r}."
                )
        elif key.endswith(("_regularizer", "_constraint")):
            # They change training, which is what this peer measures.
            if value is not None:
                raise ValueError(f"{where}: {key}={value!r} is not supported.")
        elif key == "batch_shape" and class_name == "InputLayer":
            kwargs["shape"] = tuple(value[1:])
        elif key in allowed:
            kwargs[key] = tuple(value) if isinstance(value, list) else value
        else:
            raise ValueError(
                f"{where}: config key {key}={value!r} has no tf_keras "
                "translation."
            )
    return kwargs


def _source_layer(tensor, where):
    layer, node_index, tensor_index = tensor["config"]["keras_history"]
    if node_index or tensor_index:
        raise ValueError(
            f"{where}: input {layer}[{node_index}][{tensor_index}] is a "
            "shared layer or multi-output tensor, which is not supported."
        )
    return layer


def _layer_inputs(layer):
    """None, one layer name, or a list of names: what the layer is called on."""
    nodes = layer.get("inbound_nodes") or []
    where = f"layer {layer['name']!r}"
    if not nodes:
        return None
    if len(nodes) > 1:
        raise ValueError(f"{where}: shared layers are not supported.")
    args, kwargs = nodes[0]["args"], nodes[0].get("kwargs") or {}
    if len(args) != 1 or any(v is not None for v in kwargs.values()):
        raise ValueError(
            f"{where}: called with args {args!r} and kwargs {kwargs!r}; only "
            "one input (a tensor or a list of tensors) is supported."
        )
    if isinstance(args[0], list):
        return [_source_layer(t, where) for t in args[0]]
    return _source_layer(args[0], where)


def _endpoint_names(endpoints):
    # A single endpoint is saved flat, ["image", 0, 0], several as a list.
    if endpoints and isinstance(endpoints[0], str):
        endpoints = [endpoints]
    return [name for name, _, _ in endpoints]


def layer_plan(config):
    """What to build with tf_keras for a Keras 3 functional model's config.

    Args:
        config: the parsed ``config.json`` of a ``.keras`` file.

    Returns:
        ``(specs, inputs, outputs)``: a list of :class:`LayerSpec` in an
        order where every layer comes after its inputs, and the names of the
        input and output layers.

    Raises:
        ValueError: for anything that cannot be rebuilt exactly (an unknown
            layer class or config key, a non-neutral regularizer, a shared
            layer, a layer used before it is defined).

    Example:

    >>> config = {"class_name": "Functional", "config": {
    ...     "layers": [
    ...         {"class_name": "InputLayer", "name": "x", "config": {
    ...             "name": "x", "batch_shape": [None, 4],
    ...             "dtype": "float32"}, "inbound_nodes": []},
    ...         {"class_name": "Softmax", "name": "p", "config": {
    ...             "name": "p", "axis": -1}, "inbound_nodes": [
    ...             {"args": [{"config": {"keras_history": ["x", 0, 0]}}],
    ...              "kwargs": {"mask": None}}]}],
    ...     "input_layers": ["x", 0, 0], "output_layers": ["p", 0, 0]}}
    >>> specs, inputs, outputs = layer_plan(config)
    >>> [(s.name, s.class_name, s.inputs) for s in specs]
    [('x', 'InputLayer', None), ('p', 'Softmax', 'x')]
    >>> specs[0].kwargs, specs[1].kwargs
    ({'shape': (4,)}, {'axis': -1})
    >>> inputs, outputs
    (['x'], ['p'])
    """
    if config.get("class_name") != "Functional":
        raise ValueError(
            f"class_name={config.get('class_name')!r}: only functional "
            "models can be rebuilt."
        )
    body = config["config"]
    specs, seen = [], set()
    for layer in body["layers"]:
        inputs = _layer_inputs(layer)
        needed = [inputs] if isinstance(inputs, str) else inputs or []
        missing = [name for name in needed if name not in seen]
        if missing:
            raise ValueError(
                f"layer {layer['name']!r} uses {missing} before they are "
                "defined."
            )
        specs.append(
            LayerSpec(
                layer["name"], layer["class_name"], _layer_kwargs(layer), inputs
            )
        )
        seen.add(layer["name"])
    return (
        specs,
        _endpoint_names(body["input_layers"]),
        _endpoint_names(body["output_layers"]),
    )


def match_weights(peer, reference):
    """Orders the reference weights the way each peer layer expects them.

    Matching is by layer and variable name, not by position, so that a
    layer whose variables share one shape (batch normalization's four
    vectors) cannot be filled in the wrong order.

    Args:
        peer: a dict from layer name to a list of ``(variable name, shape)``
            in the layer's ``get_weights()`` order; tf_keras names such as
            ``"stem_bn/gamma:0"`` or plain ``"gamma"`` both work.
        reference: a dict from ``"<layer>/<variable>"`` (Keras 3 names) to
            arrays.

    Returns:
        A dict from layer name to the list of arrays for ``set_weights``,
        for the layers that have weights.

    Raises:
        ValueError: naming every missing, unused or wrongly shaped weight.

    Example:

    >>> peer = {"bn": [("bn/gamma:0", (2,)), ("bn/beta:0", (2,))], "relu": []}
    >>> reference = {"bn/beta": np.zeros(2), "bn/gamma": np.ones(2)}
    >>> match_weights(peer, reference)["bn"][0]
    array([1., 1.])
    """
    matched, problems, used = {}, [], set()
    for layer, variables in peer.items():
        arrays = []
        for variable, shape in variables:
            short = variable.split(":")[0]
            if short.startswith(f"{layer}/"):
                short = short[len(layer) + 1 :]
            key = f"{layer}/{_WEIGHT_ALIASES.get(short, short)}"
            if key not in reference:
                problems.append(f"{variable}: no reference weight {key!r}")
                continue
            value = np.asarray(reference[key])
            if tuple(value.shape) != tuple(shape):
                problems.append(
                    f"{variable}: shape {tuple(shape)}, reference {key!r} "
                    f"has {tuple(value.shape)}"
                )
            arrays.append(value)
            used.add(key)
        if variables:
            matched[layer] = arrays
    problems.extend(
        f"{key}: not used by any peer layer"
        for key in sorted(set(reference) - used)
    )
    if problems:
        raise ValueError(
            "The Keras 3 and tf_keras weights do not match:\n  "
            + "\n  ".join(problems)
        )
    return matched


def _model_choice(name):
    if name in UNSUPPORTED:
        raise argparse.ArgumentTypeError(f"{name}: {UNSUPPORTED[name]}.")
    if name not in MODELS:
        raise argparse.ArgumentTypeError(
            f"{name!r} is not one of {', '.join(MODELS)}."
        )
    return name


def _positive_int(text):
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text}: must be at least 1.")
    return value


def parse_args(argv=None):
    """Parses the command line; see the module docstring.

    Example:

    >>> args = parse_args(["--model", "resnet", "--json", "o.json"])
    >>> args.epochs, args.batch_size, args.learning_rate, args.train_limit
    (1, 64, 0.0001, None)
    """
    parser = argparse.ArgumentParser(
        prog=f"python -m {MODULE}", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--model", required=True, type=_model_choice)
    parser.add_argument("--epochs", type=_positive_int, default=1)
    parser.add_argument("--batch-size", type=_positive_int, default=64)
    parser.add_argument("--learning-rate", type=float, default=1e-4)
    parser.add_argument(
        "--train-limit",
        type=_positive_int,
        default=None,
        help="train on the first N of the 60,000 training images",
    )
    parser.add_argument("--json", help="where to write the results")
    parser.add_argument(
        "--repeats",
        type=_positive_int,
        default=7,
        help="timed repetitions, at least 5 (default 7)",
    )
    parser.add_argument(
        "--steps-per-repeat",
        type=_positive_int,
        default=20,
        help="training steps per timed repetition (default 20)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--reference",
        help="an .npz from --export-reference, instead of making one",
    )
    parser.add_argument(
        "--export-reference",
        metavar="NPZ",
        help="Keras 3 mode: write the shipped model's weights and test "
        "probabilities to NPZ and exit (run without TF_USE_LEGACY_KERAS)",
    )
    args = parser.parse_args(argv)
    if args.export_reference is None and args.json is None:
        parser.error("--json is required (unless --export-reference)")
    if args.repeats < 5:
        parser.error("--repeats: the design asks for at least 5")
    return args


def _child_env(legacy):
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(REPO_ROOT)] + [p for p in [env.get("PYTHONPATH")] if p]
    )
    if legacy:
        env["TF_USE_LEGACY_KERAS"] = "1"
    else:
        env.pop("TF_USE_LEGACY_KERAS", None)
    return env


def _run_child(argv, legacy, timeout, what):
    """Runs this module in a child process; raises with its stderr's end."""
    command = [sys.executable, "-m", MODULE, *argv]
    try:
        completed = subprocess.run(
            command,
            cwd=REPO_ROOT,
            env=_child_env(legacy),
            capture_output=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired as error:
        tail = (error.stderr or b"").decode(errors="replace")[-STDERR_TAIL:]
        raise RuntimeError(
            f"{what} did not finish within {timeout} s. Command: "
            f"{' '.join(command)}\nIts stderr ended with:\n{tail}"
        ) from None
    if completed.returncode != 0:
        tail = completed.stderr.decode(errors="replace")[-STDERR_TAIL:]
        raise RuntimeError(
            f"{what} failed with exit status {completed.returncode}. "
            f"Command: {' '.join(command)}\nIts stderr ended with:\n{tail}"
        )
    return completed.stdout.decode(errors="replace")


def run_tfmot_qat(
    model,
    epochs,
    batch_size,
    learning_rate,
    train_limit=None,
    timeout=DEFAULT_TIMEOUT_S,
    repeats=7,
    steps_per_repeat=20,
):
    """Runs the tfmot QAT peer in a legacy-Keras child process.

    Imports neither TensorFlow nor tf_keras here: the child sets
    ``TF_USE_LEGACY_KERAS=1`` before TensorFlow loads, which a Keras 3
    process cannot undo.

    Args:
        model: ``"resnet"`` or ``"mobilenet_v2"``.
        epochs: QAT epochs.
        batch_size: training (and timing) batch size.
        learning_rate: Adam's learning rate.
        train_limit: train on the first N training images; None for all
            60,000.
        timeout: seconds before the child is killed. Defaults to 4 hours.
        repeats: timed repetitions, at least 5.
        steps_per_repeat: training steps per timed repetition.

    Returns:
        The result dict; its keys are :data:`RESULT_KEYS`.

    Raises:
        ValueError: for the transformer or an unknown model.
        RuntimeError: when the child fails or times out, with the end of
            its stderr.

    Example:

    >>> run_tfmot_qat("transformer", 1, 64, 1e-4)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: transformer: tfmot's default 8-bit scheme has no ...
    """
    try:
        _model_choice(model)
    except argparse.ArgumentTypeError as error:
        raise ValueError(str(error)) from None
    with tempfile.TemporaryDirectory(prefix="tfmot_qat_") as tmp:
        out = pathlib.Path(tmp) / "result.json"
        argv = [
            f"--model={model}",
            f"--epochs={epochs}",
            f"--batch-size={batch_size}",
            f"--learning-rate={learning_rate!r}",
            f"--json={out}",
            f"--repeats={repeats}",
            f"--steps-per-repeat={steps_per_repeat}",
        ]
        if train_limit is not None:
            argv.append(f"--train-limit={train_limit}")
        _run_child(argv, True, timeout, f"tfmot QAT peer ({model})")
        with open(out, encoding="utf-8") as f:
            return json.load(f)


# ---- Keras 3 side -------------------------------------------------------


def export_reference(model_name, path):
    """Writes the shipped Keras 3 model's weights and test probabilities.

    Runs in a Keras 3 process. Keys: ``weights/<layer>/<variable>`` for
    every weight, ``probabilities`` (10,000 x 10) on the test set, and
    ``keras_version``.
    """
    import keras

    from aimet_keras import zoo

    model = zoo.load_model(model_name, compile=False)
    images, _ = zoo.load_fashion_mnist("test")
    arrays = {
        f"weights/{layer.name}/{variable.name}": variable.numpy()
        for layer in model.layers
        for variable in layer.weights
    }
    probabilities = model.predict(images, batch_size=EVAL_BATCH, verbose=0)
    np.savez(
        path,
        probabilities=probabilities,
        keras_version=np.array(keras.__version__),
        **arrays,
    )


# ---- legacy Keras side --------------------------------------------------


def _load_fashion_mnist(split):
    # aimet_keras.zoo's __init__ imports Keras 3, which has no place in a
    # tf_keras process; its datasets module needs only numpy, so load that
    # file alone.
    spec = importlib.util.spec_from_file_location(
        "_aimet_keras_zoo_datasets", ZOO_DIR / "datasets.py"
    )
    datasets = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(datasets)
    return datasets.load_fashion_mnist(split)


def _keras3_config(model_name):
    with zipfile.ZipFile(ZOO_DIR / "data" / f"{model_name}.keras") as f:
        return json.loads(f.read("config.json"))


def _build(keras, config):
    specs, inputs, outputs = layer_plan(config)
    tensors = {}
    for spec in specs:
        if spec.class_name == "InputLayer":
            tensors[spec.name] = keras.Input(name=spec.name, **spec.kwargs)
            continue
        layer = getattr(keras.layers, spec.class_name)(
            name=spec.name, **spec.kwargs
        )
        if isinstance(spec.inputs, list):
            tensors[spec.name] = layer([tensors[n] for n in spec.inputs])
        else:
            tensors[spec.name] = layer(tensors[spec.inputs])

    def endpoints(names):
        found = [tensors[n] for n in names]
        return found[0] if len(found) == 1 else found

    return keras.Model(
        endpoints(inputs), endpoints(outputs), name=config["config"]["name"]
    )


def _copy_weights(model, reference):
    prefix = "weights/"
    weights = {
        key[len(prefix) :]: reference[key]
        for key in reference.files
        if key.startswith(prefix)
    }
    peer = {
        layer.name: [(w.name, tuple(w.shape)) for w in layer.weights]
        for layer in model.layers
    }
    for name, arrays in match_weights(peer, weights).items():
        model.get_layer(name).set_weights(arrays)


def _predict(model, images):
    return model.predict(images, batch_size=EVAL_BATCH, verbose=0)


def _top1(probabilities, labels):
    return float(np.mean(np.argmax(probabilities, axis=-1) == labels))


def _compile(keras, model, learning_rate):
    # The shipped models end in a softmax and were trained on its
    # probabilities (examples/zoo/train_reference_models.py).
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=False),
        metrics=["accuracy"],
    )


def _clone(keras, model):
    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    return copy


def _time_steps(tf, keras, tfmot, fp32, images, labels, args):
    """Per-step ms samples of training FP32 and QAT copies of ``fp32``."""
    from benchmarks import harness

    fp32_copy = _clone(keras, fp32)
    qat_copy = tfmot.quantization.keras.quantize_model(_clone(keras, fp32))
    count = args.steps_per_repeat * args.batch_size
    # Fixed batches, cycled; the iterator reads from memory, as fit's does.
    order = np.arange(count) % len(images)
    dataset = (
        tf.data.Dataset.from_tensor_slices((images[order], labels[order]))
        .batch(args.batch_size, drop_remainder=True)
        .repeat()
        .prefetch(2)
    )

    def stepper(model):
        _compile(keras, model, args.learning_rate)
        train_function = model.make_train_function()
        iterator = iter(dataset)

        def run():
            for _ in range(args.steps_per_repeat):
                logs = train_function(iterator)
            float(logs["loss"])  # wait for the last step's result

        return run

    samples = harness.time_interleaved(
        {"fp32": stepper(fp32_copy), "qat": stepper(qat_copy)},
        repeats=args.repeats,
        warmup=2,
    )
    return {
        name: [1000 * s / args.steps_per_repeat for s in times]
        for name, times in samples.items()
    }


def _quantize_configs(qat):
    """How tfmot wrapped each layer class: ``{"Conv2D": {config: count}}``."""
    counts = collections.defaultdict(collections.Counter)
    for layer in qat.layers:
        inner = getattr(layer, "layer", None)
        config = getattr(layer, "quantize_config", None)
        if inner is not None and config is not None:
            counts[type(inner).__name__][type(config).__name__] += 1
    return {name: dict(c) for name, c in sorted(counts.items())}


def _cpus_usable():
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count()


def _reference(args, tmp):
    if args.reference:
        return np.load(args.reference)
    path = pathlib.Path(tmp) / "reference.npz"
    _run_child(
        [f"--model={args.model}", f"--export-reference={path}"],
        False,
        DEFAULT_TIMEOUT_S,
        f"Keras 3 reference export ({args.model})",
    )
    return np.load(path)


def _legacy_imports():
    if "tensorflow" in sys.modules and not os.environ.get(
        "TF_USE_LEGACY_KERAS"
    ):
        raise RuntimeError(
            "TensorFlow is already imported with Keras 3; run this module "
            "in a fresh process (run_tfmot_qat does)."
        )
    os.environ["TF_USE_LEGACY_KERAS"] = "1"
    import tensorflow as tf
    import tensorflow_model_optimization as tfmot
    import tf_keras as keras

    if tf.keras.layers.Dense is not keras.layers.Dense:
        raise RuntimeError(
            "tf.keras is not tf_keras in this process; set "
            "TF_USE_LEGACY_KERAS=1 before TensorFlow is imported."
        )
    return tf, keras, tfmot


def run(args):
    """The legacy-Keras run; returns the result dict (see RESULT_KEYS)."""
    started = time.perf_counter()
    tf, keras, tfmot = _legacy_imports()
    keras.utils.set_random_seed(args.seed)

    test_x, test_y = _load_fashion_mnist("test")
    train_x, train_y = _load_fashion_mnist("train")
    full_train = len(train_x)
    if args.train_limit is not None:
        train_x, train_y = (
            train_x[: args.train_limit],
            train_y[: args.train_limit],
        )

    fp32 = _build(keras, _keras3_config(args.model))
    with tempfile.TemporaryDirectory(prefix="tfmot_qat_") as tmp:
        with _reference(args, tmp) as reference:
            _copy_weights(fp32, reference)
            expected = reference["probabilities"]
            keras_version = str(reference["keras_version"])
    probabilities = _predict(fp32, test_x)
    diff = float(np.max(np.abs(probabilities - expected)))
    if not diff < MAX_TRANSFER_DIFF:
        raise RuntimeError(
            f"The tf_keras {args.model} differs from the shipped Keras 3 "
            f"model by up to {diff:.3g} on the test set (limit "
            f"{MAX_TRANSFER_DIFF}); the weight transfer is wrong."
        )
    fp32_accuracy = _top1(probabilities, test_y)

    step_ms = _time_steps(tf, keras, tfmot, fp32, train_x, train_y, args)
    fp32_ms = float(np.median(step_ms["fp32"]))
    qat_ms = float(np.median(step_ms["qat"]))

    qat = tfmot.quantization.keras.quantize_model(fp32)
    _compile(keras, qat, args.learning_rate)
    fit_started = time.perf_counter()
    qat.fit(
        train_x,
        train_y,
        batch_size=args.batch_size,
        epochs=args.epochs,
        shuffle=True,
        verbose=2,
    )
    fit_seconds = time.perf_counter() - fit_started
    qat_accuracy = _top1(_predict(qat, test_x), test_y)

    return {
        "model": args.model,
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "learning_rate": args.learning_rate,
        "train_images": len(train_x),
        "test_images": len(test_x),
        "keras3_fp32_accuracy": _top1(expected, test_y),
        "fp32_accuracy": fp32_accuracy,
        "qat_accuracy": qat_accuracy,
        "fp32_step_ms": fp32_ms,
        "qat_step_ms": qat_ms,
        "step_time_ratio": qat_ms / fp32_ms,
        "weight_transfer_max_abs_diff": diff,
        "fit_seconds": fit_seconds,
        # Steps at the measured median; fit adds per-epoch overhead on top.
        "estimated_full_epoch_seconds": math.ceil(full_train / args.batch_size)
        * qat_ms
        / 1000,
        "timing": {
            "method": "compiled model.train_function on fixed batches from "
            "an in-memory tf.data iterator; FP32 and QAT copies interleaved, "
            "2 warm-up repetitions, median over repetitions",
            "repeats": args.repeats,
            "steps_per_repeat": args.steps_per_repeat,
            "fp32_step_ms_samples": step_ms["fp32"],
            "qat_step_ms_samples": step_ms["qat"],
        },
        "scheme": "tfmot default 8-bit quantize_model: per-channel symmetric "
        "Conv2D/DepthwiseConv2D weights, per-tensor Dense weights, "
        "asymmetric 8-bit activations, batch normalization unfolded",
        "quantize_configs": _quantize_configs(qat),
        "versions": {
            "tensorflow": tf.__version__,
            "tf_keras": keras.__version__,
            "tfmot": tfmot.__version__,
            "keras3_reference": keras_version,
        },
        "cpus_usable": _cpus_usable(),
        "wall_seconds": time.perf_counter() - started,
    }


def _summary(result):
    return (
        f"tfmot QAT {result['model']}: {result['epochs']} epoch(s) on "
        f"{result['train_images']} images, FP32 top-1 "
        f"{result['fp32_accuracy']:.4f} -> QAT {result['qat_accuracy']:.4f}; "
        f"step {result['fp32_step_ms']:.2f} ms FP32, "
        f"{result['qat_step_ms']:.2f} ms QAT "
        f"({result['step_time_ratio']:.2f}x); weight transfer max diff "
        f"{result['weight_transfer_max_abs_diff']:.2g}; "
        f"{result['wall_seconds']:.0f} s"
    )


def main(argv=None):
    args = parse_args(argv)
    if args.export_reference:
        export_reference(args.model, args.export_reference)
        return
    result = run(args)
    with open(args.json, "w", encoding="utf-8") as f:
        json.dump(result, f, indent=2)
    print(_summary(result), flush=True)


if __name__ == "__main__":
    main()
