"""The exception a user of `affectlab.models` can cause: a bad model name, weights file, shape or option."""


class ModelError(ValueError):
    """A model was asked for something it cannot do; the message names the bad value and what was expected."""
