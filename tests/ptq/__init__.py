def assert_kernel_on_its_grid(wrapper):
    """The wrapper's kernel equals its own quantization: it is on the grid."""
    import numpy as np

    from aimet_keras.quant import quantize_dequantize

    quantizer = wrapper.param_quantizers["kernel"]
    kernel = wrapper.layer.kernel
    np.testing.assert_allclose(
        quantize_dequantize(
            kernel.value, quantizer.encoding, axis=quantizer.axis
        ).numpy(),
        kernel.numpy(),
        atol=1e-6,
    )
