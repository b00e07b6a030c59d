"""Channel-dependency groups of a Keras Sequential or functional model.

Every channel that a layer creates (a conv/dense filter, a model input
channel) is an *element*; a tensor's channel (last) axis is described by its
*layout*: the array of elements at each position. Pass-through layers
(BatchNorm, activations, pooling, dropout, padding, global pooling) keep
their input's layout; ``Add``/``Multiply``/... tie the elements at equal
positions of all their inputs; ``Concatenate`` joins layouts end to end
(Torch-Pruning's index mapping); ``Flatten`` repeats the layout once per
pixel (channel-last order); a depthwise conv keeps its input layout (in = out).

Tied elements form a *channel*: it is kept or pruned as a whole. Channels made
of the same producers form a :class:`ChannelGroup`, the unit a pruning target
(ratio, width) applies to: a plain conv's filters are one group, all convs of a
residual stage share one group, and an add of a concatenation with a conv
splits that conv's filters into one group per concatenated part. Groups holding
a model input, reaching a model output, or flowing into a channel-mixing op
(softmax, a reshape that moves channels) are fixed: never pruned.

Example::

    from bnnprune_tf import graph, models
    g = graph.ChannelGraph(models.build("resnet18", (32, 32, 3), width=0.25))
    for group in g.prunable_groups():
        print(group.size, list(group.filters), group.consumers)
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import tensorflow as tf

from bnnprune_tf import layer_facts, masks
from bnnprune_tf.errors import ModelError
from bnnprune_tf.layer_facts import DEPTHWISE, PER_CHANNEL, PRODUCERS

layers = tf.keras.layers

PASS_THROUGH = (
    layers.Activation, layers.ReLU, layers.LeakyReLU, layers.ELU, layers.Dropout,
    layers.SpatialDropout2D, layers.GaussianNoise, layers.MaxPool2D, layers.AveragePooling2D,
    layers.ZeroPadding2D, layers.Cropping2D, layers.UpSampling2D,
    layers.GlobalAveragePooling2D, layers.GlobalMaxPool2D, layers.Identity,
)
ELEMENTWISE = (layers.Add, layers.Subtract, layers.Multiply, layers.Average, layers.Maximum,
               layers.Minimum)
SUPPORTED = ("conv/dense/depthwise (Keras and Larq), BatchNormalization, PReLU, activations, "
             "pooling, dropout, padding, Add/Multiply/..., Concatenate, Flatten, Reshape, and "
             "Lambda/TFOpLambda running elementwise ops, activations, identity, concat or split")


@dataclass
class ChannelGroup:
    """Channels that share their producers; a pruning target applies to all of them.

    ``filters[layer]`` gives, for each channel of the group in order, the index
    of that layer's filter that produces it: shape ``(size,)``, or ``(size, k)``
    when ``k`` filters of the layer feed each channel (an ``Add`` of the layer
    with ``Concatenate([x, x])`` ties filters ``i`` and ``C + i`` to channel ``i``
    of ``x``).
    """

    id: int
    size: int
    filters: dict[str, np.ndarray] = field(default_factory=dict)
    consumers: list[str] = field(default_factory=list)
    per_channel: list[str] = field(default_factory=list)
    fixed_reason: str = ""

    @property
    def producers(self) -> list[str]:
        return list(self.filters)

    @property
    def prunable(self) -> bool:
        return not self.fixed_reason and bool(self.filters)


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
        self._parent = np.zeros(0, np.int64)
        self._fixed: dict[int, str] = {}              # element -> reason (resolved via roots)
        self._made_by: list[tuple[str, int]] = []     # per space: (layer name, first element)
        self.inputs: dict[str, np.ndarray] = {}       # layer -> input layout (element ids)
        self.outputs: dict[str, np.ndarray] = {}      # layer -> output layout
        self._tensor: dict[tuple, np.ndarray] = {}
        self._producers: list[str] = []
        self._consumers: list[str] = []
        self._per_channel: list[str] = []
        for t in model.inputs:
            layer, node, index = t._keras_history
            self._tensor[(layer.name, node, index)] = self._new_elements(int(t.shape[-1]),
                                                                         "model input")
        for layer in model.layers:
            if not isinstance(layer, layers.InputLayer):
                self._visit(layer)
        for t in model.outputs:
            self._fix(self._layout(t), "reaches a model output")
        self._build_groups()

    # ---------------------------------------------------------- union-find
    def _new_elements(self, n: int, fixed: str = "") -> np.ndarray:
        start = len(self._parent)
        self._parent = np.concatenate([self._parent, np.arange(start, start + n)])
        elements = np.arange(start, start + n)
        if fixed:
            self._fix(elements, fixed)
        return elements

    def roots(self, elements: np.ndarray) -> np.ndarray:
        r = np.asarray(elements)
        while True:
            nxt = self._parent[r]
            if np.array_equal(nxt, r):
                return r
            r = nxt

    def _union(self, a: np.ndarray, b: np.ndarray) -> None:
        for x, y in zip(self.roots(a), self.roots(b)):
            x, y = self.roots(np.array([x, y]))
            if x != y:
                self._parent[y] = x
                reason = self._fixed.pop(int(y), "")
                if reason:
                    self._fixed.setdefault(int(x), reason)

    def _fix(self, elements: np.ndarray, reason: str) -> None:
        for r in np.unique(self.roots(elements)):
            self._fixed.setdefault(int(r), reason)

    def _fixed_reason(self, element: int) -> str:
        return self._fixed.get(int(self.roots(np.array([element]))[0]), "")

    # ---------------------------------------------------------- traversal
    def _layout(self, tensor) -> np.ndarray:
        layer, node, index = tensor._keras_history
        return self._tensor[(layer.name, node, index)]

    def _visit(self, layer) -> None:
        if isinstance(layer, tf.keras.Model):
            raise ModelError(f"layer {layer.name!r} is a nested model ({type(layer).__name__}); "
                             "build the model flat (functional) to prune it")
        if len(layer._inbound_nodes) != 1:
            raise ModelError(
                f"layer {layer.name!r} is called {len(layer._inbound_nodes)} times; shared "
                "layers cannot be pruned: give each call its own layer")
        # every Keras tensor operand: a TFOpLambda's ``layer.input`` holds only the first
        ins = [self._layout(t) for t in layer._inbound_nodes[0].keras_inputs]
        self.inputs[layer.name] = np.concatenate(ins) if ins else np.zeros(0, np.int64)
        if isinstance(layer, layer_facts.TRACED):
            outs = self._traced(layer, ins)
        else:
            outs = [self._output_layout(layer, ins)]
        for index, out in enumerate(outs):
            self._tensor[(layer.name, 0, index)] = out
        self.outputs[layer.name] = np.concatenate(outs)

    def _output_layout(self, layer, ins) -> np.ndarray:
        if isinstance(layer, DEPTHWISE):
            if layer.depth_multiplier != 1:
                raise ModelError(f"layer {layer.name!r}: depthwise convs with depth_multiplier "
                                 f"{layer.depth_multiplier} cannot be pruned (only 1)")
            self._per_channel.append(layer.name)
            return ins[0]
        if isinstance(layer, PRODUCERS):
            if getattr(layer, "groups", 1) != 1:
                raise ModelError(f"layer {layer.name!r}: grouped convolutions cannot be pruned")
            self._producers.append(layer.name)
            self._consumers.append(layer.name)
            return self._new_elements(int(layer.output.shape[-1]))
        if isinstance(layer, PER_CHANNEL):
            if isinstance(layer, layers.BatchNormalization) and layer.axis not in ([-1], [len(layer.input.shape) - 1]):
                raise ModelError(f"layer {layer.name!r}: BatchNormalization over axis "
                                 f"{layer.axis} cannot be pruned (only the channel axis)")
            self._per_channel.append(layer.name)
            return ins[0]
        if (isinstance(layer, layers.Activation) and layer.activation is tf.keras.activations.softmax) \
                or isinstance(layer, layers.Softmax):
            return self._mixing(layer, ins, "flows into a softmax, which mixes channels")
        if isinstance(layer, PASS_THROUGH):
            return ins[0]
        if isinstance(layer, ELEMENTWISE):
            return self._tie_all(layer, ins)
        if isinstance(layer, layers.Concatenate):
            if layer.axis in (-1, len(layer.output.shape) - 1):
                return np.concatenate(ins)
            return self._tie_all(layer, ins)   # along a spatial axis: channels are tied
        if isinstance(layer, layers.Flatten):
            pixels = int(np.prod(layer.input.shape[1:-1])) if len(layer.input.shape) > 2 else 1
            return np.tile(ins[0], pixels)
        if isinstance(layer, layers.Reshape):
            in_shape, out_shape = layer.input.shape, layer.output.shape
            if in_shape[-1] == out_shape[-1] and np.prod(in_shape[1:-1]) == np.prod(out_shape[1:-1]):
                return ins[0]                                   # e.g. (1, 1, C) <-> (C,)
            if len(out_shape) == 2:                             # a flatten
                return np.tile(ins[0], int(np.prod(in_shape[1:-1])))
            return self._mixing(layer, ins, "flows into a reshape that moves channels")
        return self._mixing(layer, ins, "", unknown=True)

    def _traced(self, layer, ins) -> list[np.ndarray]:
        """Layouts of a ``Lambda``/``TFOpLambda`` output(s), read from the TF ops it runs."""
        fn = _trace(layer)
        layout = {t.name: l for t, l in zip(fn.inputs, ins)}
        for op in fn.graph.get_operations():
            known = [layout.get(t.name) for t in op.inputs]
            if op.type == "Placeholder" or all(k is None for k in known):
                continue
            for t, out in zip(op.outputs, self._op_layouts(layer, op, known)):
                layout[t.name] = out
        return [layout[t.name] if t.name in layout else
                self._new_elements(int(t.shape[-1]) if t.shape.rank else 1, "a constant")
                for t in fn.outputs]

    def _op_layouts(self, layer, op, known) -> list[np.ndarray]:
        channels = [k for k in known if k is not None]
        others = [t for t, k in zip(op.inputs, known) if k is None]
        scalars = all(t.shape.num_elements() == 1 for t in others)
        if op.type in layer_facts.PASS_THROUGH_OPS and len(channels) == 1 and scalars:
            return [channels[0]] * len(op.outputs)
        if op.type in layer_facts.ELEMENTWISE_OPS and scalars:
            return [self._tie_all(layer, channels)]
        if op.type == "ConcatV2" and all(k is not None for k in known[:-1]):
            if _on_channels(op.inputs[-1], op.inputs[0]):
                return [np.concatenate(known[:-1])]
            return [self._tie_all(layer, known[:-1])]
        if op.type in ("Pad", "PadV2", "MirrorPad") and known[0] is not None:
            paddings = tf.get_static_value(op.inputs[1])      # a mirror copies channels
            if paddings is not None and (op.type != "MirrorPad" or not paddings[-1].any()):
                before, after = (int(n) for n in paddings[-1])
                fixed = f"padded by {layer.name!r} with a fixed number of channels"
                return [np.concatenate([self._new_elements(before, fixed), known[0],
                                        self._new_elements(after, fixed)])]
        if op.type == "Split" and known[1] is not None:
            if not _on_channels(op.inputs[0], op.inputs[1]):
                return [known[1]] * len(op.outputs)
            self._fix(known[1], f"flows into tf.split in {layer.name!r}, which cuts equal parts")
            return list(np.split(known[1], len(op.outputs)))
        return [self._mixing(layer, channels, "", unknown=op.type, size=_channels(t))
                for t in op.outputs]

    def _tie_all(self, layer, ins) -> np.ndarray:
        for other in ins[1:]:
            if len(other) != len(ins[0]):
                raise ModelError(f"layer {layer.name!r} ({type(layer).__name__}) combines "
                                 f"tensors with {len(ins[0])} and {len(other)} channels "
                                 "(broadcasting channels cannot be pruned): give both "
                                 "operands the same number of channels")
            self._union(ins[0], other)
        return ins[0]

    def _mixing(self, layer, ins, reason, unknown: bool | str = False,
                size: int | None = None) -> np.ndarray:
        elements = np.concatenate(ins)
        if unknown and any(not self._fixed_reason(e) for e in elements):
            what = (f"runs the TensorFlow op {unknown}, which the channel graph does not "
                    f"understand" if isinstance(unknown, str) else
                    "is a layer type the channel graph does not understand")
            raise ModelError(
                f"layer {layer.name!r} ({type(layer).__name__}) {what}, and prunable channels "
                f"flow into it. Rewrite it with supported layers ({SUPPORTED}), e.g. "
                "tf.keras.layers.Add()([x, y]) instead of x + y, Concatenate instead of tf.concat")
        self._fix(elements, reason)
        if size is None:
            size = _channels(layer.output)
        return self._new_elements(size, "output of a channel-mixing layer")

    # ---------------------------------------------------------- groups
    def _build_groups(self) -> None:
        n = len(self._parent)
        self._root = self.roots(np.arange(n))
        members: dict[int, dict[str, list]] = {}          # channel root -> {producer: filters}
        for name in self._producers:
            for f, r in enumerate(self._root[self.outputs[name]]):
                members.setdefault(int(r), {}).setdefault(name, []).append(f)
        by_signature: dict[tuple, list[int]] = {}
        for r in np.unique(self._root):
            signature = tuple(sorted((p, len(f)) for p, f in members.get(int(r), {}).items()))
            by_signature.setdefault(signature, []).append(int(r))
        self.groups: list[ChannelGroup] = []
        self._group_of_root: dict[int, tuple[int, int]] = {}   # root -> (group id, position)
        for signature, roots in sorted(by_signature.items(), key=lambda kv: min(kv[1])):
            gid = len(self.groups)
            group = ChannelGroup(id=gid, size=len(roots))
            for p, n in signature:
                filters = np.array([members[r][p] for r in roots])     # (size, n)
                group.filters[p] = filters[:, 0] if n == 1 else filters
            group.fixed_reason = next((self._fixed[r] for r in roots if r in self._fixed), "")
            for pos, r in enumerate(roots):
                self._group_of_root[r] = (gid, pos)
            self.groups.append(group)
        for attr, names in (("consumers", self._consumers), ("per_channel", self._per_channel)):
            for name in names:
                for gid in dict.fromkeys(self._group_of_root[int(r)][0]
                                         for r in self._root[self.inputs[name]]):
                    getattr(self.groups[gid], attr).append(name)

    def prunable_groups(self) -> list[ChannelGroup]:
        return [g for g in self.groups if g.prunable]

    def groups_of(self, producer: str) -> list[ChannelGroup]:
        """The groups holding filters of layer ``producer``."""
        if producer not in self._producers:
            raise ModelError(f"no conv/dense layer named {producer!r} in the model")
        return [g for g in self.groups if producer in g.filters]

    def binary_consumers(self, group: ChannelGroup) -> bool:
        """True if a binary convolution reads these channels (LCE packs them in 32s)."""
        return any(layer_facts.is_binary_conv(self.model.get_layer(n)) for n in group.consumers)

    def binary_producers(self, group: ChannelGroup) -> bool:
        """True if a binary convolution writes these channels (LCE blocks them in 8s)."""
        return any(layer_facts.is_binary_conv(self.model.get_layer(n)) for n in group.producers)

    # ---------------------------------------------------------- masks <-> keep
    def _position(self, layout: np.ndarray):
        gp = np.array([self._group_of_root[int(r)] for r in self._root[layout]]).reshape(-1, 2)
        return gp[:, 0], gp[:, 1]

    def layout_mask(self, layout: np.ndarray, keep: dict[int, np.ndarray]) -> np.ndarray:
        """0/1 vector over a tensor's channel axis under ``keep`` (group id -> bool per channel)."""
        gids, pos = self._position(layout)
        out = np.ones(len(layout), np.float32)
        for gid in np.unique(gids):
            if int(gid) in keep:
                sel = gids == gid
                out[sel] = keep[int(gid)][pos[sel]]
        return out

    def keep_indices(self, layout: np.ndarray, keep: dict[int, np.ndarray]) -> np.ndarray:
        """Positions along a tensor's channel axis that ``keep`` keeps."""
        return np.flatnonzero(self.layout_mask(layout, keep))

    def apply_masks(self, model: tf.keras.Model, keep: dict[int, np.ndarray]) -> None:
        """Set channel and input-channel masks of ``model``'s masked layers.

        ``keep`` maps a group id to a bool vector over its channels (True =
        kept); groups not in ``keep`` are fully kept. Weight masks are untouched.
        """
        for gid, k in keep.items():
            group = self.groups[gid]
            if len(k) != group.size:
                raise ModelError(f"keep for group {gid} has {len(k)} entries, expected {group.size}")
            if not k.all() and not group.prunable:
                raise ModelError(f"channels of {group.producers or group.consumers} cannot be "
                                 f"pruned: {group.fixed_reason}")
            if not k.any():
                raise ModelError(f"group of {group.producers} would lose all its channels")
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
            ModelError: a producer masks a filter that a consumer still reads
                (masks set by hand on one layer of a group only).
        """
        keep = {g.id: np.ones(g.size, bool) if not g.prunable or not g.consumers
                else np.zeros(g.size, bool) for g in self.groups}
        for layer in model.layers:
            if not masks.is_masked(layer) or not isinstance(layer, PRODUCERS + DEPTHWISE):
                continue
            used = layer.input_channel_mask.numpy() > 0
            gids, pos = self._position(self.inputs[layer.name])
            for gid, p, u in zip(gids, pos, used):
                keep[int(gid)][p] |= u
        for layer in model.layers:
            if masks.is_masked(layer) and isinstance(layer, PRODUCERS):
                kept = self.layout_mask(self.outputs[layer.name], keep) > 0
                dropped = np.flatnonzero(kept & (layer.channel_mask.numpy() == 0))
                if dropped.size:
                    raise ModelError(
                        f"layer {layer.name!r} masks filters {dropped[:5].tolist()} that other "
                        "layers still read; set masks through bnnprune_tf.prune (whole groups)")
        return keep


def _channels(tensor) -> int:
    """Size of a tensor's channel (last) axis, 1 for a scalar."""
    return int(tensor.shape[-1]) if tensor.shape.rank else 1


def _on_channels(axis, tensor) -> bool:
    """Whether the constant ``axis`` is ``tensor``'s channel (last) axis."""
    value, rank = tf.get_static_value(axis), tensor.shape.rank
    return value is not None and rank is not None and int(value) in (-1, rank - 1)


def _trace(layer):
    """The concrete TF function of ``layer``'s one call, its Keras operands as arguments."""
    node = layer._inbound_nodes[0]
    operands = list(node.keras_inputs)

    def call(*tensors):
        by_id = {id(k): t for k, t in zip(operands, tensors)}
        args, kwargs = tf.nest.map_structure(lambda a: by_id.get(id(a), a),
                                             (node.call_args, node.call_kwargs))
        return layer.call(*args, **kwargs)

    specs = [tf.TensorSpec(k.shape, k.dtype) for k in operands]
    return tf.function(call).get_concrete_function(*specs)
