"""The pipeline stages, collected by name into :data:`STAGES` (see :mod:`pipelines.stages.base`).

Example::

    from pipelines.stages import STAGES
    print(sorted(STAGES))    # ['benchmark', 'convert', 'evaluate', 'firmware', 'prune', ...]
"""

from pipelines.stages import deploy, pruning, training
from pipelines.stages.base import Stage

STAGES: dict[str, Stage] = {s.name: s for module in (training, pruning, deploy)
                            for s in vars(module).values() if isinstance(s, Stage)}
