"""What the pre-training objective needs to know about data parallelism.

With the batch split over replicas (processes on torch, tf.distribute
replicas on TensorFlow), one process's pooled loss would weight each
replica's target patches by its own count; AIM's loss pools every target
patch of the global batch as one. A `ReplicaContext` on an `AIMPretrainer`
(`pretrainer.replica_context`) gives it the replica's index, the replica
count and a cross-replica sum, so that prefix lengths and the loss are
exactly those of one process on the global batch.
"""

from keras import ops


class ReplicaContext:
    """The replica a training step runs on.

    Subclasses give `index()` (this replica's position, a Python int or a
    scalar tensor), `num_replicas` and `sum(x)` (the sum of `x` over the
    replicas, without gradient). `value_scale` multiplies the reported loss
    for trainers that rescale it themselves (`tf.distribute` divides by the
    replica count).
    """

    num_replicas = 1
    value_scale = 1.0

    def index(self):
        raise NotImplementedError

    def sum(self, x):
        raise NotImplementedError

    def pooled_loss(self, total, count):
        """The global batch's pooled loss, with this replica's gradient.

        The value is the global loss (times `value_scale`); the gradient is
        that of this replica's summed errors over the global count, so the
        gradients summed across replicas are the global batch's exactly.
        """
        global_count = ops.maximum(self.sum(ops.stop_gradient(count)), 1.0)
        local = total / global_count
        value = self.sum(ops.stop_gradient(total)) / global_count
        # `value + (local - local)` carries local's gradient and is exactly
        # `value` (x - x == 0 in IEEE arithmetic), so every replica reports
        # the same bits. `local + (value - local)` rounds differently on each
        # replica, since `local` differs: one ulp apart across processes.
        return ops.stop_gradient(value * self.value_scale) + (
            local - ops.stop_gradient(local)
        )
