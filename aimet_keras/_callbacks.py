"""Evaluation callbacks in the forms AIMET's users write them."""


def as_model_callback(callback, name):
    """``f(model)`` from a callable, AIMET's ``(function, args)`` pair, or
    an AIMET ``CallbackFunc`` (an object with ``func`` and ``args``).

    Example:

    >>> as_model_callback((lambda model, n: n + 1, 2), "eval_callback")(None)
    3
    """
    if hasattr(callback, "func") and hasattr(callback, "args"):
        callback = (callback.func, callback.args)
    if isinstance(callback, tuple) and len(callback) == 2:
        function, args = callback
        if callable(function):
            return lambda model: function(model, args)
    if callable(callback):
        return callback
    raise TypeError(
        f"{name} must be a function taking the model, AIMET's "
        f"(function, args) pair or a CallbackFunc; got "
        f"{type(callback).__name__}."
    )
