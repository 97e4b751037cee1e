"""The state a JAX training step takes (shared by the benchmark scripts in
this folder, which run with it on their path)."""


def train_state(model):
    """`(trainable, non_trainable, optimizer, metrics)` variable values, as
    Keras' JAX `fit` passes them to `model.train_step`; the optimizer is
    built first if it is not."""
    if not model.optimizer.built:
        model.optimizer.build(model.trainable_variables)
    groups = (
        model.trainable_variables,
        model.non_trainable_variables,
        model.optimizer.variables,
        model.metrics_variables,
    )
    return tuple([v.value for v in group] for group in groups)
