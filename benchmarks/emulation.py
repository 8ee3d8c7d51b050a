"""Runs an ONNX model in onnxruntime on an x86 CPU emulated by qemu-user.

onnxruntime picks its integer kernels by the CPU's features: on x86 without
VNNI its uint8 x int8 kernels add pairs of products in 16 bits with
saturation, with VNNI they do not. ``qemu-x86_64 -cpu <model>`` (Debian's
qemu-user) runs this machine's Python and onnxruntime on an emulated CPU, so
that one machine checks the kernels of others. qemu's TCG has no AVX-512,
so a VNNI machine is checked natively.

Example:

>>> sorted(EMULATED_CPUS)
['avx2', 'sse4.2']
"""

import platform
import shutil
import subprocess
import sys

import numpy as np

__all__ = ["EMULATED_CPUS", "can_emulate", "run_onnx_emulated"]

# Name -> qemu CPU model: AVX2 and FMA without AVX-512 or VNNI (Haswell,
# less the features TCG lacks, which it would warn about), and SSE4.2 only.
EMULATED_CPUS = {
    "avx2": "Haswell,-pcid,-x2apic,-tsc-deadline,-hle,-invpcid,-rtm",
    "sse4.2": "Nehalem",
}

_RUN_DEFAULT_SESSION = """
import sys, numpy as np, onnxruntime as ort
session = ort.InferenceSession(sys.argv[1], providers=["CPUExecutionProvider"])
images = np.load(sys.argv[2])
outputs = session.run(None, {session.get_inputs()[0].name: images})
np.save(sys.argv[3], outputs[0])
"""


def can_emulate():
    """Whether ``qemu-x86_64`` is installed and this machine is x86_64."""
    return (
        shutil.which("qemu-x86_64") is not None
        and platform.machine() == "x86_64"
    )


def run_onnx_emulated(path, images, cpu, folder, timeout=1800):
    """The model's first output at default session options on ``cpu``.

    Args:
        path: an ONNX model.
        images: the model's input batch (numpy).
        cpu: a key of :data:`EMULATED_CPUS`.
        folder: a folder for the input and output files.
        timeout: seconds before the emulated run is stopped.

    Returns:
        The output array.
    """
    images_path = f"{folder}/emulated_images.npy"
    out_path = f"{folder}/emulated_outputs.npy"
    np.save(images_path, images)
    subprocess.run(
        [
            "qemu-x86_64",
            "-cpu",
            EMULATED_CPUS[cpu],
            sys.executable,
            "-c",
            _RUN_DEFAULT_SESSION,
            str(path),
            images_path,
            out_path,
        ],
        check=True,
        capture_output=True,
        timeout=timeout,
    )
    return np.load(out_path)
