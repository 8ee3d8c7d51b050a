"""Writes ``tf_keras_model.h5`` and its outputs (needs tf_keras: Keras 2).

    pip install tf-keras && python tests/graph/data/make_tf_keras_model.py

The layers a Keras 2 MobileNet-style model holds, trained weights and batch
norm statistics made non-trivial, as a tfmot user would bring.
"""

import pathlib

import numpy as np

HERE = pathlib.Path(__file__).parent


def main():
    # Imported here: the test run imports this module for its doctests,
    # and tf_keras is in the bench extra only.
    import tf_keras as k2

    k2.utils.set_random_seed(0)
    inputs = k2.Input((16, 16, 3))
    x = k2.layers.ZeroPadding2D(1)(inputs)
    x = k2.layers.Conv2D(8, 3, strides=2)(x)
    x = k2.layers.BatchNormalization()(x)
    x = k2.layers.ReLU(6.0)(x)
    shortcut = x
    x = k2.layers.DepthwiseConv2D(3, padding="same")(x)
    x = k2.layers.BatchNormalization()(x)
    x = k2.layers.Activation("swish")(x)
    x = k2.layers.Conv2D(8, 1)(x)
    x = k2.layers.Add()([x, shortcut])
    x = k2.layers.SeparableConv2D(12, 3, padding="same", activation="relu")(x)
    x = k2.layers.MaxPooling2D()(x)
    x = k2.layers.GlobalAveragePooling2D()(x)
    x = k2.layers.Dropout(0.2)(x)
    outputs = k2.layers.Dense(4, activation="softmax")(x)
    model = k2.Model(inputs, outputs, name="keras2_net")
    rng = np.random.default_rng(0)
    for layer in model.layers:
        if isinstance(layer, k2.layers.BatchNormalization):
            gamma, beta, mean, var = layer.get_weights()
            layer.set_weights(
                [
                    rng.uniform(0.5, 1.5, gamma.shape),
                    rng.normal(0, 0.1, beta.shape),
                    rng.normal(0, 0.1, mean.shape),
                    rng.uniform(0.5, 1.5, var.shape),
                ]
            )
    images = rng.random((8, 16, 16, 3)).astype("float32")
    model.save(HERE / "tf_keras_model.h5")
    np.savez(
        HERE / "tf_keras_model_outputs.npz",
        images=images,
        outputs=model.predict(images, verbose=0),
    )


if __name__ == "__main__":
    main()
