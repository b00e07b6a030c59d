"""Channel-dependency groups of a Keras Sequential or functional model.

Every tensor's channel (last) axis is described by a *layout*: a tuple of
segments, each a slice of a *channel space*. A conv/dense layer creates a
space (its output channels); pass-through layers (BatchNorm, activations,
pooling, dropout, padding, global pooling) keep their input's layout;
``Add``/``Multiply``/... tie the spaces of all their inputs into one group;
``Concatenate`` joins layouts end to end (Torch-Pruning's index mapping);
``Flatten`` repeats the layout once per pixel (channel-last order); a
depthwise conv keeps its input layout (in = out). Groups holding a model
input or reaching a model output, or fed to a channel-mixing op such as
softmax, are fixed: never pruned.

A group lists its *producers* (conv/dense layers whose filters are its
channels), *consumers* (layers whose input channels or features include it)
and the per-channel layers in between (BatchNorm, depthwise convs), which is
all :mod:`bnnprune_tf.select` and :mod:`bnnprune_tf.shrink` need.

Example::

    from bnnprune_tf import graph, models
    g = graph.ChannelGraph(models.build("resnet18", (32, 32, 3), width=0.25))
    for group in g.prunable_groups():
        print(group.size, group.producers, group.consumers)
"""

from __future__ import annotations

from dataclasses import dataclass, field

import larq as lq
import numpy as np
import tensorflow as tf

from bnnprune_tf import masks
from bnnprune_tf.errors import ModelError

layers = tf.keras.layers

PRODUCERS = (layers.Conv2D, layers.Dense)      # includes the Larq and masked subclasses
DEPTHWISE = (layers.DepthwiseConv2D,)          # includes QuantDepthwiseConv2D
PER_CHANNEL = (layers.BatchNormalization,)
PASS_THROUGH = (
    layers.Activation, layers.ReLU, layers.LeakyReLU, layers.ELU, layers.Dropout,
    layers.SpatialDropout2D, layers.GaussianNoise, layers.MaxPool2D, layers.AveragePooling2D,
    layers.ZeroPadding2D, layers.Cropping2D, layers.UpSampling2D,
    layers.GlobalAveragePooling2D, layers.GlobalMaxPool2D, layers.Identity,
)
ELEMENTWISE = (layers.Add, layers.Subtract, layers.Multiply, layers.Average, layers.Maximum,
               layers.Minimum)


@dataclass(frozen=True)
class Segment:
    """Channels ``[start, stop)`` of channel space ``space``."""

    space: int
    start: int
    stop: int

    @property
    def size(self) -> int:
        return self.stop - self.start


@dataclass
class ChannelGroup:
    """Channels that must be pruned together."""

    id: int
    size: int
    producers: list[str] = field(default_factory=list)
    consumers: list[str] = field(default_factory=list)
    per_channel: list[str] = field(default_factory=list)
    fixed_reason: str = ""

    @property
    def prunable(self) -> bool:
        return not self.fixed_reason and bool(self.producers)


def _is_binary_input(layer) -> bool:
    quantizer = getattr(layer, "input_quantizer", None)
    return getattr(quantizer, "precision", None) == 1


def _is_binary_conv(layer) -> bool:
    kernel_q = getattr(layer, "kernel_quantizer", None)
    return (isinstance(layer, layers.Conv2D) and _is_binary_input(layer)
            and getattr(kernel_q, "precision", None) == 1)


class ChannelGraph:
    """The channel groups of ``model`` and the layout of every layer's input/output.

    Raises:
        ModelError: a layer type the graph does not understand touches
            prunable channels, a shared layer, a nested model, or a subclassed model.
    """

    def __init__(self, model: tf.keras.Model):
        if not isinstance(model, tf.keras.Sequential) and not getattr(model, "_is_graph_network", False):
            raise ModelError(f"model {model.name!r} is a subclassed model; channel groups "
                             "need a Sequential or functional model")
        self.model = model
        self._parent: list[int] = []
        self._size: list[int] = []
        self._fixed: dict[int, str] = {}
        self._producer_of: dict[int, str] = {}
        self.inputs: dict[str, tuple[Segment, ...]] = {}     # layer -> input layout
        self.outputs: dict[str, tuple[Segment, ...]] = {}    # layer -> output layout
        self._tensor_layout: dict[tuple, tuple[Segment, ...]] = {}
        self._consumers: list[str] = []
        self._per_channel: list[str] = []
        for layer in model.layers:
            self._visit(layer)
        for t in model.outputs:
            for seg in self._layout(t):
                self._fix(seg.space, "reaches a model output")
        self.groups = self._make_groups()

    # ---------------------------------------------------------- union-find
    def _new_space(self, size: int, fixed: str = "") -> int:
        self._parent.append(len(self._parent))
        self._size.append(size)
        if fixed:
            self._fixed[len(self._parent) - 1] = fixed
        return len(self._parent) - 1

    def root(self, space: int) -> int:
        while self._parent[space] != space:
            self._parent[space] = self._parent[self._parent[space]]
            space = self._parent[space]
        return space

    def _union(self, a: int, b: int, layer) -> None:
        ra, rb = self.root(a), self.root(b)
        if ra == rb:
            return
        if self._size[ra] != self._size[rb]:
            raise ModelError(f"layer {layer.name!r} ties channel sets of different sizes")
        self._parent[rb] = ra
        reason = self._fixed.pop(rb, "") or self._fixed.get(ra, "")
        if reason:
            self._fixed[ra] = reason

    def _fix(self, space: int, reason: str) -> None:
        self._fixed.setdefault(self.root(space), reason)

    # ---------------------------------------------------------- traversal
    def _layout(self, tensor) -> tuple[Segment, ...]:
        layer, node, index = tensor._keras_history
        return self._tensor_layout[(layer.name, node, index)]

    def _visit(self, layer) -> None:
        if isinstance(layer, tf.keras.Model):
            raise ModelError(f"layer {layer.name!r} is a nested model ({type(layer).__name__}); "
                             "build the model flat (functional) to prune it")
        if isinstance(layer, layers.InputLayer):
            size = int(layer.output.shape[-1])
            self._set_output(layer, (Segment(self._new_space(size, "model input"), 0, size),))
            return
        if len(layer._inbound_nodes) != 1:
            raise ModelError(f"layer {layer.name!r} is called {len(layer._inbound_nodes)} times; "
                             "shared layers cannot be pruned: give each call its own layer")
        ins = [self._layout(t) for t in tf.nest.flatten(layer.input)]
        self.inputs[layer.name] = ins[0] if len(ins) == 1 else tuple(s for l in ins for s in l)
        out = self._output_layout(layer, ins)
        self._set_output(layer, out)

    def _set_output(self, layer, layout) -> None:
        self.outputs[layer.name] = layout
        self._tensor_layout[(layer.name, 0, 0)] = layout

    def _output_layout(self, layer, ins):
        if isinstance(layer, DEPTHWISE):
            if layer.depth_multiplier != 1:
                raise ModelError(f"layer {layer.name!r}: depthwise convs with depth_multiplier "
                                 f"{layer.depth_multiplier} cannot be pruned (only 1)")
            self._per_channel.append(layer.name)
            return ins[0]
        if isinstance(layer, PRODUCERS):
            if getattr(layer, "groups", 1) != 1:
                raise ModelError(f"layer {layer.name!r}: grouped convolutions cannot be pruned")
            size = int(layer.output.shape[-1])
            space = self._new_space(size)
            self._producer_of[space] = layer.name
            self._consumers.append(layer.name)
            return (Segment(space, 0, size),)
        if isinstance(layer, PER_CHANNEL):
            if layer.axis not in ([-1], [len(layer.input.shape) - 1]):
                raise ModelError(f"layer {layer.name!r}: BatchNormalization over axis "
                                 f"{layer.axis} cannot be pruned (only the channel axis)")
            self._per_channel.append(layer.name)
            return ins[0]
        if isinstance(layer, layers.Activation) and layer.activation is tf.keras.activations.softmax \
                or isinstance(layer, layers.Softmax):
            return self._mixing(layer, ins, "softmax mixes channels")
        if isinstance(layer, PASS_THROUGH):
            return ins[0]
        if isinstance(layer, ELEMENTWISE):
            return self._tie_all(layer, ins)
        if isinstance(layer, layers.Concatenate):
            rank = len(layer.output.shape)
            if layer.axis in (-1, rank - 1):
                return tuple(s for l in ins for s in l)
            return self._tie_all(layer, ins)      # concatenation along a spatial axis
        if isinstance(layer, layers.Flatten):
            pixels = int(np.prod(layer.input.shape[1:-1])) if len(layer.input.shape) > 2 else 1
            return ins[0] * pixels
        if isinstance(layer, layers.Reshape):
            in_shape, out_shape = layer.input.shape, layer.output.shape
            if in_shape[-1] == out_shape[-1] and np.prod(in_shape[1:-1]) == np.prod(out_shape[1:-1]):
                return ins[0]                                   # e.g. (1, 1, C) <-> (C,)
            if len(out_shape) == 2:                             # a flatten
                return ins[0] * int(np.prod(in_shape[1:-1]))
            return self._mixing(layer, ins, "reshape moves channels")
        return self._mixing(layer, ins, "", unknown=True)

    def _tie_all(self, layer, ins):
        """Element-wise ops: channel i of every input is the same channel."""
        first = ins[0]
        for other in ins[1:]:
            if len(other) != len(first) or any(
                    a.size != b.size or a.start or b.start
                    or a.size != self._size[self.root(a.space)]
                    or b.size != self._size[self.root(b.space)]
                    for a, b in zip(first, other)):
                raise ModelError(f"layer {layer.name!r} ({type(layer).__name__}) combines "
                                 "tensors whose channels come from concatenations with "
                                 "different boundaries; this cannot be pruned")
            for a, b in zip(first, other):
                self._union(a.space, b.space, layer)
        return first

    def _mixing(self, layer, ins, reason, unknown=False):
        touched = [s for l in ins for s in l if self.root(s.space) not in self._fixed]
        if unknown and touched:
            raise ModelError(
                f"layer {layer.name!r} ({type(layer).__name__}) is a layer type the channel "
                "graph does not understand, and prunable channels flow into it. Supported: "
                "conv/dense/depthwise (Keras and Larq), BatchNormalization, activations, "
                "pooling, dropout, padding, Add/Multiply/..., Concatenate, Flatten, Reshape")
        for seg in touched:
            self._fix(seg.space, reason or f"flows into {type(layer).__name__}")
        size = int(layer.output.shape[-1]) if layer.output.shape.rank else 1
        return (Segment(self._new_space(size, "output of a channel-mixing layer"), 0, size),)

    # ---------------------------------------------------------- groups
    def _make_groups(self) -> list[ChannelGroup]:
        by_root: dict[int, ChannelGroup] = {}
        for space in range(len(self._parent)):
            r = self.root(space)
            if r not in by_root:
                by_root[r] = ChannelGroup(id=r, size=self._size[r],
                                          fixed_reason=self._fixed.get(r, ""))
            if space in self._producer_of:
                by_root[r].producers.append(self._producer_of[space])
        for name in self._consumers:
            for r in dict.fromkeys(self.root(s.space) for s in self.inputs[name]):
                by_root[r].consumers.append(name)
        for name in self._per_channel:
            for r in dict.fromkeys(self.root(s.space) for s in self.inputs[name]):
                by_root[r].per_channel.append(name)
        return sorted(by_root.values(), key=lambda g: g.id)

    def group(self, group_id: int) -> ChannelGroup:
        return next(g for g in self.groups if g.id == group_id)

    def group_of(self, producer: str) -> ChannelGroup:
        """The group whose channels are the filters of layer ``producer``."""
        seg, = self.outputs[producer]
        return self.group(self.root(seg.space))

    def prunable_groups(self) -> list[ChannelGroup]:
        return [g for g in self.groups if g.prunable]

    def binary_consumers(self, group: ChannelGroup) -> bool:
        """True if a binary convolution reads these channels (LCE packs them in 32s)."""
        return any(_is_binary_conv(self.model.get_layer(n)) for n in group.consumers)

    def binary_producers(self, group: ChannelGroup) -> bool:
        """True if a binary convolution writes these channels (LCE blocks them in 8s)."""
        return any(_is_binary_conv(self.model.get_layer(n)) for n in group.producers)

    # ---------------------------------------------------------- masks <-> keep
    def keep_indices(self, layout, keep: dict[int, np.ndarray]) -> np.ndarray:
        """Positions along a tensor's channel axis kept under ``keep`` (group id -> bool)."""
        out, offset = [], 0
        for seg in layout:
            k = keep.get(self.root(seg.space))
            idx = np.arange(seg.size) if k is None else np.flatnonzero(k[seg.start:seg.stop])
            out.append(idx + offset)
            offset += seg.size
        return np.concatenate(out) if out else np.zeros(0, int)

    def layout_mask(self, layout, keep: dict[int, np.ndarray]) -> np.ndarray:
        """0/1 vector over a tensor's channel axis (1 = kept)."""
        mask = np.zeros(sum(s.size for s in layout), np.float32)
        mask[self.keep_indices(layout, keep)] = 1.0
        return mask

    def apply_masks(self, model: tf.keras.Model, keep: dict[int, np.ndarray]) -> None:
        """Set channel and input masks of ``model``'s masked layers from group keeps.

        ``keep`` maps a group id to a bool vector of its channels (True = kept);
        groups not in ``keep`` are left fully kept. Weight masks are untouched.
        """
        for group_id, k in keep.items():
            group = self.group(group_id)
            if not k.any():
                raise ModelError(f"group of {group.producers} would lose all its channels")
            if not k.all() and not group.prunable:
                raise ModelError(f"channels of {group.producers or group.consumers} cannot be "
                                 f"pruned: {group.fixed_reason}")
        for layer in model.layers:
            if not masks.is_masked(layer):
                continue
            channel = None
            if isinstance(layer, PRODUCERS):
                channel = self.layout_mask(self.outputs[layer.name], keep)
            elif isinstance(layer, DEPTHWISE):
                channel = self.layout_mask(self.inputs[layer.name], keep)
            layer.set_masks(channel=channel,
                            input_channels=self.layout_mask(self.inputs[layer.name], keep))

    def keep_from_masks(self, model: tf.keras.Model) -> dict[int, np.ndarray]:
        """The channels each group keeps in a masked ``model``: those some consumer reads.

        Raises:
            ModelError: a producer masks a channel that a consumer still reads
                (masks set by hand on one layer of a group only).
        """
        keep: dict[int, np.ndarray] = {}
        for g in self.groups:
            keep[g.id] = np.zeros(g.size, bool) if g.prunable else np.ones(g.size, bool)
        for layer in model.layers:
            if layer.name not in self.inputs or not masks.is_masked(layer) \
                    or not isinstance(layer, PRODUCERS + DEPTHWISE):
                continue
            used = layer.input_channel_mask.numpy() > 0
            offset = 0
            for seg in self.inputs[layer.name]:
                keep[self.root(seg.space)][seg.start:seg.stop] |= used[offset:offset + seg.size]
                offset += seg.size
        for g in self.groups:   # a group nobody reads (dead branch) stays whole
            if g.prunable and not g.consumers:
                keep[g.id][:] = True
        for layer in model.layers:
            if masks.is_masked(layer) and isinstance(layer, PRODUCERS):
                seg, = self.outputs[layer.name]
                k = keep[self.root(seg.space)][seg.start:seg.stop]
                dropped = np.flatnonzero(k & (layer.channel_mask.numpy() == 0))
                if dropped.size:
                    raise ModelError(
                        f"layer {layer.name!r} masks filters {dropped[:5].tolist()} that other "
                        "layers still read; set masks through bnnprune_tf.prune (whole groups)")
        return keep
