"""Masks on Larq and Keras layers: channel, input-channel and weight masks.

A masked layer is the same layer class with three non-trainable variables:

- ``channel_mask`` (one entry per output channel / filter),
- ``input_channel_mask`` (one entry per input channel or input feature),
- ``weight_mask`` (the kernel's shape; unstructured pruning),

and it computes with the *effective kernel* ``q(latent) * weight_mask *
input_channel_mask * channel_mask`` (``q`` the layer's kernel quantizer, identity for
float layers, applied to the kept input channels and filters only, as in the
shrunk layer) and a bias multiplied by ``channel_mask``. So a masked binary
weight is a real 0, not ``sign(0) = +1`` as when latent weights are zeroed.

Why both channel and input masks: a pruned filter followed by BatchNorm still
emits BN's constant offset, and its sign is +-1, not 0. The channel is only
truly gone when every *consumer* ignores it, which the consumer's
``input_channel_mask`` does; :mod:`bnnprune_tf.graph` sets both sides of each channel
group consistently, so a masked model computes exactly what the shrunk model
(:func:`bnnprune_tf.shrink.shrink`) computes.

Pruned latent weights get no gradient (the mask multiplies them out) and stay
put: the kernel constraint restores them to their value at the time the masks
were last set (``frozen_kernel``), so Adam's momentum cannot move them either.

Masks are layer weights: they are saved by ``model.save`` (load with
``bnnprune_tf`` imported, which registers the classes) and by
``tf.train.Checkpoint``, and they work inside ``tf.function`` and
``tf.distribute`` strategies like any other variable.

Example::

    from bnnprune_tf import masks, models
    model = masks.prunable(models.build("mnist_bnn", (28, 28, 1)))
    layer = model.get_layer("conv2")
    keep = np.ones(64, "float32"); keep[:16] = 0
    layer.set_masks(channel=keep)          # 16 filters pruned (see graph.apply_masks
                                           # to prune whole channel groups consistently)
"""

from __future__ import annotations

import contextlib

import larq as lq
import numpy as np
import tensorflow as tf

from bnnprune_tf import layer_facts
from bnnprune_tf.errors import ModelError

_PACKAGE = "bnnprune"


@contextlib.contextmanager
def _swapped(layer, **values):
    """Temporarily replace attributes without Keras' attribute tracking."""
    old = {name: layer.__dict__[name] for name in values}
    try:
        for name, value in values.items():
            object.__setattr__(layer, name, value)
        yield
    finally:
        for name, value in old.items():
            object.__setattr__(layer, name, value)


def _scatter_kept(values, mask, axis: int) -> tf.Tensor:
    """``values`` (the kept slices along ``axis``) back at the positions where ``mask`` is
    1, zeros where it is 0: the inverse of gathering the kept slices."""
    kept = mask > 0
    pad = [[0, 0]] * values.shape.rank
    pad[axis] = [0, 1]                                    # one zero slice at the end
    index = tf.where(kept, tf.cumsum(tf.cast(kept, tf.int32)) - 1,
                     tf.reduce_sum(tf.cast(kept, tf.int32)))
    return tf.gather(tf.pad(values, pad), index, axis=axis)


class MaskedLayer:
    """Mixin adding masks to a conv, depthwise-conv or dense layer (see module doc).

    Subclasses set ``_kernel_attr``, ``_constraint_attr`` and ``_quantizer_attr``.
    """

    _kernel_attr = "kernel"
    _constraint_attr = "kernel_constraint"
    _quantizer_attr = "kernel_quantizer"

    # ------------------------------------------------------------ shapes
    def _kernel_var(self):
        return getattr(self, self._kernel_attr)

    @property
    def latent_kernel(self) -> tf.Variable:
        """The float latent kernel (the ``tf.Variable`` the optimizer updates)."""
        kernel = self._kernel_var()
        return getattr(kernel, "latent_variable", kernel)

    def _is_depthwise(self) -> bool:
        return self._kernel_attr == "depthwise_kernel"

    def _mask_shapes(self, kernel_shape):
        if self._is_depthwise():
            return kernel_shape[-2] * kernel_shape[-1], kernel_shape[-2]
        return kernel_shape[-1], kernel_shape[-2]

    # ------------------------------------------------------------ build
    def build(self, input_shape):
        if getattr(self, "groups", 1) != 1:
            raise ModelError(f"layer {self.name!r}: grouped convolutions cannot be masked")
        original = getattr(self, self._constraint_attr)
        with _swapped(self, **{self._constraint_attr: self._constraint(original)}):
            super().build(input_shape)
        kernel_shape = tuple(self.latent_kernel.shape)
        n_out, n_in = self._mask_shapes(kernel_shape)
        self.channel_mask = self._mask_variable("channel_mask", (n_out,))
        self.input_channel_mask = self._mask_variable("input_channel_mask", (n_in,))
        self.weight_mask = self._mask_variable("weight_mask", kernel_shape)
        self.frozen_kernel = self.add_weight(
            name="frozen_kernel", shape=kernel_shape, initializer="zeros", trainable=False,
            aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)

    def _mask_variable(self, name, shape):
        return self.add_weight(name=name, shape=shape, initializer="ones", trainable=False,
                               aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)

    def _constraint(self, inner):
        def constrain(w):
            w = inner(w) if inner is not None else w
            full = self.full_mask()
            return full * w + (1.0 - full) * self.frozen_kernel

        return constrain

    # ------------------------------------------------------------ compute
    def full_mask(self) -> tf.Tensor:
        """``weight_mask * input_channel_mask * channel_mask`` broadcast to the kernel shape."""
        if self._is_depthwise():
            n_in, mult = self.weight_mask.shape[-2:]
            channel = tf.reshape(self.channel_mask, (n_in, mult))
            return self.weight_mask * channel * self.input_channel_mask[:, None]
        return self.weight_mask * self.channel_mask * self.input_channel_mask[:, None]

    @tf.autograph.experimental.do_not_convert
    def effective_kernel(self) -> tf.Tensor:
        """The kernel the layer computes with: quantized latent weights times the mask.

        The quantizer sees only the latent weights of kept input channels and
        filters, exactly the kernel of the shrunk layer, so a quantizer that looks
        at the whole kernel (``magnitude_aware_sign``'s per-filter mean ``|w|``,
        DoReFa's maximum, larq-zoo's ``xnor_weight_scale``) computes the same
        scale here as after :func:`bnnprune_tf.shrink.shrink`.
        """
        quantizer = getattr(self, self._quantizer_attr, None)
        latent = tf.convert_to_tensor(self.latent_kernel)
        rank = len(latent.shape)
        if layer_facts.is_elementwise(quantizer, rank):       # the cheap, equal way
            return (quantizer(latent) if quantizer is not None else latent) * self.full_mask()
        axes = [(-2, self.input_channel_mask)]
        if not self._is_depthwise():
            axes.append((-1, self.channel_mask))
        kept = latent
        for axis, mask in axes:
            kept = tf.gather(kept, tf.reshape(tf.where(mask > 0), [-1]), axis=axis)
        quantized = quantizer(kept)
        for axis, mask in axes:
            quantized = _scatter_kept(quantized, mask, axis)
        return quantized * self.full_mask()

    def call(self, inputs):
        values = {self._kernel_attr: self.effective_kernel()}
        if getattr(self, "use_bias", False):
            values["bias"] = self.bias * self.channel_mask
        with _swapped(self, **values):
            return super().call(inputs)

    # ------------------------------------------------------------ API
    def set_masks(self, channel=None, input_channels=None, weights=None) -> None:
        """Assign any of the three masks (arrays of 0/1) and freeze pruned weights.

        The current latent kernel is recorded in ``frozen_kernel``; pruned
        latent weights return to these values after every optimizer step.
        """
        for name, value in (("channel_mask", channel), ("input_channel_mask", input_channels),
                            ("weight_mask", weights)):
            if value is None:
                continue
            var = getattr(self, name)
            value = np.asarray(value, dtype=np.float32)
            if value.shape != tuple(var.shape):
                raise ModelError(f"layer {self.name!r}: {name} must have shape "
                                 f"{tuple(var.shape)}, got {value.shape}")
            if not np.all((value == 0) | (value == 1)):
                raise ModelError(f"layer {self.name!r}: {name} must hold only 0 and 1")
            var.assign(value)
        self.frozen_kernel.assign(self.latent_kernel)

    def masks_numpy(self) -> dict[str, np.ndarray]:
        return {name: getattr(self, name).numpy()
                for name in ("channel_mask", "input_channel_mask", "weight_mask")}


def _masked_class(base):
    kernel_attr, constraint_attr, quantizer_attr = layer_facts.kernel_attrs(base)
    cls = type(f"Masked{base.__name__}", (MaskedLayer, base), {
        "_kernel_attr": kernel_attr, "_constraint_attr": constraint_attr,
        "_quantizer_attr": quantizer_attr,
        "__doc__": f"{base.__name__} with channel, input and weight masks "
                   "(see :mod:`bnnprune_tf.masks`).",
        "__module__": __name__,
    })
    return tf.keras.utils.register_keras_serializable(_PACKAGE)(cls)


MASKED = {base: _masked_class(base) for base in layer_facts.MASKABLE}
MaskedQuantConv2D = MASKED[lq.layers.QuantConv2D]
MaskedQuantDense = MASKED[lq.layers.QuantDense]
MaskedQuantDepthwiseConv2D = MASKED[lq.layers.QuantDepthwiseConv2D]
MaskedConv2D = MASKED[tf.keras.layers.Conv2D]
MaskedDense = MASKED[tf.keras.layers.Dense]
MaskedDepthwiseConv2D = MASKED[tf.keras.layers.DepthwiseConv2D]
UNMASKED = {masked: plain for plain, masked in MASKED.items()}


def is_masked(layer) -> bool:
    return isinstance(layer, MaskedLayer)


def has_masks(model: tf.keras.Model) -> bool:
    """True if any layer of ``model`` carries masks."""
    return any(is_masked(l) for l in model.layers)


def require_masks(model: tf.keras.Model, user: str) -> None:
    """Raise a ModelError naming ``user`` (e.g. a callback) if ``model`` has no masks."""
    if not has_masks(model):
        raise ModelError(f"{user} needs a masked model: call bnnprune_tf.masks.prunable(model) "
                         "before compile and fit")


def prunable(model: tf.keras.Model) -> tf.keras.Model:
    """A copy of ``model`` whose conv/depthwise/dense layers carry masks (all ones).

    Layer names, configs and weights are kept; the copy computes exactly what
    ``model`` computes until masks are set. An already masked model is
    returned as is.

    Raises:
        ModelError: ``model`` is a subclassed model (use Sequential or functional).
    """
    if has_masks(model):
        return model
    if not isinstance(model, tf.keras.Sequential) and not getattr(model, "_is_graph_network", False):
        raise ModelError(f"model {model.name!r} is a subclassed model; masks need a "
                         "Sequential or functional model")

    def clone(layer):
        cls = MASKED.get(type(layer), type(layer))
        return cls.from_config(layer.get_config())

    masked = tf.keras.models.clone_model(model, clone_function=clone)
    for old, new in zip(model.layers, masked.layers):
        values = old.get_weights()
        if is_masked(new):
            n = len(values)
            new.set_weights(values + new.get_weights()[n:])
            new.set_masks()   # record frozen_kernel
        else:
            new.set_weights(values)
    return masked
