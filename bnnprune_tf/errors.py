"""Exception types of bnnprune-tf, one per failure family.

Every message says what is wrong and how to fix it. All derive from
:class:`BnnpruneError` (a ``ValueError``), so ``except ValueError`` still works.

Example::

    from bnnprune_tf import data, errors
    try:
        data.load("mnist6k")
    except errors.DataError as e:
        print(e)   # names the known datasets
"""


class BnnpruneError(ValueError):
    """Base class of all errors raised by bnnprune-tf."""


class DataError(BnnpruneError):
    """A data source is unknown, missing or malformed."""


class ModelError(BnnpruneError):
    """A model is unknown, misconfigured, or not something we can analyse."""


class RecipeError(BnnpruneError):
    """A pipeline recipe does not validate, or a run directory is inconsistent."""


class ConversionError(BnnpruneError):
    """A model does not convert, or its flatbuffer disagrees with Keras or is unreadable."""


class BenchmarkError(BnnpruneError):
    """A latency benchmark cannot run: missing binary, unreachable device, unparsable output."""


class FirmwareError(ConversionError):
    """``make -C firmware`` failed: a missing tool, a model too big for the board, no probe."""


class FileWriteError(BnnpruneError):
    """An output cannot be written: the disk is full, the directory is not writable."""


class DistributeError(BnnpruneError):
    """A tf.distribute setup that cannot work: no or bad ``TF_CONFIG``, unreachable workers."""
