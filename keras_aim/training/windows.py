"""`WindowCallbackList`: Keras' callback list, without the per-step host
transfer of logs that no callback reads (see `keras_aim.callbacks`)."""

import keras


class WindowCallbackList(keras.callbacks.CallbackList):
    """A `keras.callbacks.CallbackList` that skips unread batch-end logs.

    Keras hands every step's logs to a worker thread that converts them to
    Python numbers (a device-to-host transfer per step) even when no
    callback has a batch-end hook. This list passes them on only when one
    of its callbacks reads them, so a run of k-step windows transfers data
    once per window.

    Args:
        callbacks: the callbacks.
        model: the model.
        **params: as for `keras.callbacks.CallbackList` (`epochs`,
            `steps`, `verbose`).
    """

    def __init__(self, callbacks, model, **params):
        super().__init__(
            callbacks,
            add_history=True,
            add_progbar=False,
            model=model,
            **params,
        )
        base = keras.callbacks.Callback
        self.reads_batch_logs = any(
            type(c).on_train_batch_end is not base.on_train_batch_end
            or type(c).on_batch_end is not base.on_batch_end
            for c in self.callbacks
        )

    def on_train_batch_end(self, batch, logs=None):
        if self.reads_batch_logs:
            super().on_train_batch_end(batch, logs)
