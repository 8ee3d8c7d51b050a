"""Block reconstruction: blocks follow the graph's cuts; fitting lowers the
blocks' output error and leaves the kernels on their frozen grids."""

import pytest

from aimet_keras import zoo
from aimet_keras.graph import walk
from aimet_keras.ptq import AdaroundParameters
from aimet_keras.ptq import find_blocks
from aimet_keras.ptq import fold_all_batch_norms
from aimet_keras.ptq import reconstruct_blocks
from aimet_keras.sim import QuantizationSimModel
from tests.ptq import assert_kernel_on_its_grid

IMAGES = zoo.load_fashion_mnist_slice("calibration")[0][:128]


def _sim(model_name="resnet"):
    model = zoo.load_model(model_name, compile=False)
    folded, _ = fold_all_batch_norms(model)
    sim = QuantizationSimModel(
        folded, default_param_bw=4, default_output_bw=4, config_file="htp"
    )
    return sim


@pytest.mark.parametrize("model_name", ["resnet", "mobilenet_v2"])
def test_blocks_partition_the_graph_and_keep_residuals_whole(model_name):
    sim = _sim(model_name)
    sim._compute_param_encodings()
    blocks = find_blocks(sim, min_layers=1)
    sites = walk(sim.model)
    assert [s.node for b in blocks for s in b] == [s.node for s in sites]
    for block in blocks:
        inside = {id(t) for s in block for t in s.outputs}
        read = {id(t) for s in block for t in s.inputs} - inside
        # A block starts at a cut: one tensor from before feeds it, so a
        # residual Add and both its branches fall in one block.
        assert len(read) == 1, [s.operation.name for s in block]
    # Larger blocks hold at least that many layers with kernels (the last
    # may hold fewer).
    for block in find_blocks(sim, min_layers=3)[:-1]:
        kernels = [s for s in block if "kernel" in s.operation.param_quantizers]
        assert len(kernels) >= 3


def test_fitting_lowers_block_errors_and_freezes_grids():
    sim = _sim()
    sim.compute_encodings(IMAGES)
    params = AdaroundParameters(
        IMAGES, num_batches=2, default_num_iterations=40
    )
    results = reconstruct_blocks(sim, params, verbose=False)
    rounded = {name for r in results for name in r.layers}
    assert len(rounded) >= 10
    assert sum(r.error_after for r in results) < sum(
        r.error_before for r in results
    )
    for name in rounded:
        wrapper = sim.model.get_layer(name)
        quantizer = wrapper.param_quantizers["kernel"]
        assert id(quantizer) in sim._frozen
        assert_kernel_on_its_grid(wrapper)


def test_bad_arguments_are_named():
    sim = _sim()
    params = AdaroundParameters(IMAGES, num_batches=1)
    with pytest.raises(ValueError, match="compute_encodings"):
        reconstruct_blocks(sim, params)
    with pytest.raises(ValueError, match="drop_probability"):
        reconstruct_blocks(sim, params, drop_probability=1.5)
