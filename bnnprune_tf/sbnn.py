"""The generalized binary domain {alpha, beta} of SBNN (Schiavone, Galati, Zuluaga, ECML PKDD 2023).

A binary conv's weights live in ``{alpha, beta} = {phi - tau, phi + tau}`` with one
trainable ``tau`` (init 1) and ``phi`` (init 0) per layer: ``w_b = tau * sign(w) + phi``
(Larq's sign, ``sign(0) = +1``; ``../shared/reference/methods.md`` section 4.1). A weight
mapped to ``beta`` (latent ``w >= 0``) is a *connection*. With ``b = (s + 1) / 2`` in
{0, 1} the conv splits into a sparse binary conv and one shared all-ones term::

    conv(x, tau * S + phi) == 2 * tau * conv(x, B) + (phi - tau) * conv(x, 1)

so the cost of a deployed layer can follow its number of connections
(:func:`connections`; ``converters.sbnn`` deploys it).

- :class:`AffineSign`: the kernel quantizer, ``tau * ste_sign(w) + phi``; it declares
  ``weight_domain = "affine"`` for :mod:`bnnprune_tf.layer_facts`;
- :class:`SBNNConv2D`: a ``QuantConv2D`` owning ``tau`` and ``phi``, latent weights
  clipped to ``[-clip_value, clip_value]`` (1.5, the reference's clamp) after every step;
- :func:`to_sbnn`: a copy of a Larq model with its binary convs (binary input and kernel,
  not the classifier) in the domain, latent weights kept;
- :func:`expected_connections`: ``p_hat``, the share of connections over all SBNN layers,
  with the straight-through gradient 0.5 per latent weight;
- :func:`closed_form`: least-squares ``(tau, phi)`` of a trained kernel (section 4.5).

Example::

    from bnnprune_tf import models, sbnn
    model = sbnn.to_sbnn(models.build("vgg_small", (28, 28, 1), width=0.25))
    layer = model.get_layer("conv2")
    float(layer.tau), float(layer.phi)            # 1.0, 0.0: a plain sign BNN at first
    float(sbnn.expected_connections(sbnn.sbnn_layers(model)))   # share of latent w >= 0
"""

from __future__ import annotations

from typing import Sequence

import larq as lq
import numpy as np
import tensorflow as tf

from bnnprune_tf import layer_facts
from bnnprune_tf.errors import ModelError

CLIP = 1.5   # the reference clamps latent weights to [-1.5, 1.5] after every step


@tf.keras.utils.register_keras_serializable(package="bnnprune")
class AffineSign:
    """Kernel quantizer ``tau * ste_sign(w) + phi`` of an :class:`SBNNConv2D`.

    The straight-through gradient passes where ``|w| <= clip_value`` (the latent range).
    ``tau`` and ``phi`` are the layer's variables (:meth:`bind`); the layer creates and binds
    them when it builds, so the quantizer is never used alone.
    """

    weight_domain = "affine"
    precision = 1

    def __init__(self, clip_value: float = CLIP):
        self.clip_value = float(clip_value)
        self.tau = self.phi = None

    def bind(self, tau: tf.Variable, phi: tf.Variable) -> None:
        self.tau, self.phi = tau, phi

    def __call__(self, x):
        if self.tau is None:
            raise ModelError("AffineSign has no tau/phi: it is the kernel quantizer of an "
                             "SBNNConv2D, which binds them when it builds")
        signs = lq.quantizers.ste_sign(x, clip_value=self.clip_value)
        return tf.cast(self.tau, signs.dtype) * signs + tf.cast(self.phi, signs.dtype)

    def get_config(self) -> dict:
        return {"clip_value": self.clip_value}

    @classmethod
    def from_config(cls, config):
        return cls(**config)


@tf.keras.utils.register_keras_serializable(package="bnnprune")
class SBNNConv2D(lq.layers.QuantConv2D):
    """A Larq ``QuantConv2D`` whose weights are ``{phi - tau, phi + tau}``: one trainable
    ``tau`` (init 1) and ``phi`` (init 0) per layer (SBNN's domain).

    Takes ``QuantConv2D``'s arguments except ``kernel_quantizer`` (always an
    :class:`AffineSign`); ``kernel_constraint`` defaults to a clip at ``clip_value``.

    Example::

        layer = SBNNConv2D(32, 3, padding="same", pad_values=1.0, input_quantizer="ste_sign",
                           use_bias=False)
    """

    def __init__(self, filters, kernel_size, *, clip_value: float = CLIP,
                 kernel_quantizer=None, **kwargs):
        if kernel_quantizer is not None and not isinstance(kernel_quantizer, AffineSign):
            raise ModelError(f"SBNNConv2D quantizes its kernel itself (tau * sign(w) + phi); "
                             f"leave kernel_quantizer out (got {kernel_quantizer!r})")
        kwargs.setdefault("kernel_constraint", lq.constraints.WeightClip(clip_value))
        super().__init__(filters, kernel_size, kernel_quantizer=AffineSign(clip_value), **kwargs)
        self.clip_value = float(clip_value)

    def build(self, input_shape):
        self.tau = self.add_weight("tau", shape=(), initializer=tf.keras.initializers.Constant(1.0))
        self.phi = self.add_weight("phi", shape=(), initializer=tf.keras.initializers.Zeros())
        self.kernel_quantizer.bind(self.tau, self.phi)
        super().build(input_shape)

    def convolution_op(self, inputs, kernel):
        """``tau * conv(x, S) + phi * conv(x, 1)``: the same function as ``conv(x, tau * S +
        phi)`` (``kernel``), computed as the converted model runs it (exact integer sums,
        then two products and a sum), so that Keras and LCE round alike."""
        signs = lq.quantizers.ste_sign(layer_facts.latent_kernel(self), clip_value=self.clip_value)
        ones = tf.ones(tuple(signs.shape[:-1]) + (1,), signs.dtype)
        sums = super().convolution_op(inputs, signs)
        window = super().convolution_op(inputs, ones)
        return tf.cast(self.tau, sums.dtype) * sums + tf.cast(self.phi, sums.dtype) * window

    def get_config(self) -> dict:
        config = super().get_config()
        config.pop("kernel_quantizer", None)
        return {**config, "clip_value": self.clip_value}

    def alpha_beta(self) -> tuple[float, float]:
        """``(alpha, beta) = (phi - tau, phi + tau)``."""
        tau, phi = float(self.tau.numpy()), float(self.phi.numpy())
        return phi - tau, phi + tau

    def connections(self) -> np.ndarray:
        """``B`` in {0, 1} (HWIO, int8): 1 where the weight is ``beta`` (latent ``w >= 0``)."""
        return connections(self)


def connections(layer) -> np.ndarray:
    """``B`` in {0, 1} of an SBNN layer (HWIO int8): 1 where the latent weight is ``>= 0``
    (mapped to ``beta`` by Larq's sign)."""
    return (np.asarray(layer_facts.latent_kernel(layer)) >= 0).astype(np.int8)


def sbnn_layers(model: tf.keras.Model) -> list[SBNNConv2D]:
    """The :class:`SBNNConv2D` layers of ``model``, in order."""
    return [layer for layer in model.layers if isinstance(layer, SBNNConv2D)]


def convertible_layers(model: tf.keras.Model) -> list[str]:
    """Names of the binary convs :func:`to_sbnn` puts in the domain: convs with a binary
    (sign) input and a binary kernel, except the classifier (the last conv), as the
    reference counts connections over the binary convs only, not the float first conv
    or the fully connected classifier."""
    convs = [layer for layer in model.layers if isinstance(layer, layer_facts.PRODUCERS)]
    last = convs[-1] if convs else None
    return [layer.name for layer in model.layers
            if isinstance(layer, lq.layers.QuantConv2D) and not isinstance(layer, SBNNConv2D)
            and layer is not last and layer_facts.is_binary_conv(layer)]


def to_sbnn(model: tf.keras.Model, layers: Sequence[str] | None = None,
            clip_value: float = CLIP, start: str = "plain", ec: float = 0.5) -> tf.keras.Model:
    """A copy of ``model`` with ``layers`` (default :func:`convertible_layers`) as
    :class:`SBNNConv2D`, latent kernels kept (clipped to ``clip_value``); ``model`` is untouched.

    ``start="plain"`` sets ``tau = 1, phi = 0`` (the reference: the same sign BNN).
    ``"closed_form"`` quantizes the trained (latent, full-precision) kernel ``w`` of each
    layer into the domain at ``ec`` connections: the ``ec`` share of largest ``w``
    become the connections (the optimal two-level partition for a fixed count; latent
    weights are shifted by that quantile so the sign gives them), and ``tau``, ``phi`` are
    the least-squares :func:`closed_form` of ``w / mean|w|`` (the division keeps the
    conv's output on the scale the BatchNorm after it was trained with).

    Raises:
        ModelError: no binary conv to convert, a named layer that is not one, or an
            unknown ``start``.

    Example::

        sparse = to_sbnn(model, start="closed_form")
    """
    if start not in ("plain", "closed_form"):
        raise ModelError(f"unknown start {start!r}: use 'plain' (tau=1, phi=0) or "
                         "'closed_form' (least squares on the trained latent weights)")
    allowed = convertible_layers(model)
    names = list(allowed if layers is None else layers)
    bad = [n for n in names if n not in allowed]
    if bad or not names:
        raise ModelError(
            f"model {model.name!r}: {'layers ' + ', '.join(map(repr, bad)) if bad else 'nothing'}"
            " cannot be put in the SBNN domain; it needs QuantConv2D layers with a sign input "
            "and a sign kernel (binary convs) other than the classifier"
            f" (here: {', '.join(allowed) or 'none'})")

    def clone(layer):
        if layer.name not in names:
            return layer.__class__.from_config(layer.get_config())
        config = layer.get_config()
        config.pop("kernel_quantizer")
        config.pop("kernel_constraint")
        return SBNNConv2D.from_config({**config, "clip_value": clip_value})

    copy = tf.keras.models.clone_model(model, clone_function=clone)
    for old, new in zip(model.layers, copy.layers):
        if old.name not in names:
            new.set_weights(old.get_weights())
            continue
        kernel = np.asarray(layer_facts.latent_kernel(old), np.float32)
        if new.use_bias:
            new.bias.assign(old.bias)
        if start == "closed_form":
            cut = np.quantile(kernel, 1.0 - ec)
            tau, phi = closed_form(kernel / np.abs(kernel).mean(), kernel >= cut)
            kernel = kernel - cut
            new.tau.assign(tau)
            new.phi.assign(phi)
        layer_facts.latent_kernel(new).assign(np.clip(kernel, -clip_value, clip_value))
    return copy


def expected_connections(layers: Sequence) -> tf.Tensor:
    """``p_hat``: the share of latent weights ``>= 0`` (connections) over all ``layers``.

    Its gradient is the reference's straight-through estimate (CIFAR code): 0.5 per
    latent weight, divided by the weight count, whatever the weight's value.

    Example::

        p_hat = expected_connections(sbnn_layers(model))
    """
    kernels = [layer_facts.latent_kernel(layer) for layer in layers]
    if not kernels:
        raise ModelError("no SBNN layers: expected connections are counted over SBNNConv2D "
                         "layers (bnnprune_tf.sbnn.to_sbnn)")
    total = sum(int(np.prod(k.shape)) for k in kernels)
    ones = tf.add_n([tf.reduce_sum(tf.stop_gradient(tf.cast(k >= 0, k.dtype) - 0.5 * k) + 0.5 * k)
                     for k in kernels])
    return ones / total


def closed_form(weights, connected=None) -> tuple[float, float]:
    """Least-squares ``(tau, phi)`` of ``weights`` in the domain (methods.md section 4.5):
    with ``P`` the connected weights (default ``weights >= 0``) and ``N`` the others,
    ``beta = mean(w in P)``, ``alpha = mean(w in N)``; ``tau = (beta - alpha) / 2``,
    ``phi = (beta + alpha) / 2``. An empty side takes the other's value (``tau = 0``
    is avoided: then ``tau = |mean|`` of all, ``phi = 0``).

    Example::

        closed_form(np.array([-1.0, -0.5, 0.5, 2.0]))   # beta 1.25, alpha -0.75 -> (1.0, 0.25)
    """
    w = np.asarray(weights, np.float64).reshape(-1)
    p = (w >= 0) if connected is None else np.asarray(connected, bool).reshape(-1)
    if p.all() or not p.any():
        return float(np.abs(w).mean()), 0.0
    beta, alpha = w[p].mean(), w[~p].mean()
    return float((beta - alpha) / 2), float((beta + alpha) / 2)
