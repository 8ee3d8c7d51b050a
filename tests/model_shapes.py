"""Small models of the shapes users have, shared by the graph and sim tests."""

import keras


def nested_shared_multi_io():
    """Two inputs, a shared Dense, a nested Sequential, keras.ops, two outputs.

    The nested model's Dense is named "fc" like the outer head, so
    preparing the model has to rename one.
    """
    inner = keras.Sequential(
        [
            keras.Input((8,)),
            keras.layers.Dense(8, name="fc"),
            keras.layers.ReLU(name="inner_relu"),
        ],
        name="inner",
    )
    a, b = keras.Input((8,), name="a"), keras.Input((8,), name="b")
    shared = keras.layers.Dense(8, name="shared")
    x = keras.ops.add(inner(shared(a)), shared(b))
    head = keras.layers.Dense(3, name="fc")(x)
    return keras.Model([a, b], [head, keras.ops.softmax(x)], name="outer")
