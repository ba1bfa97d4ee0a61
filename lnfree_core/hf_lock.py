"""One process-wide lock around everything that imports or builds a transformers model.

Why a lock and not per-thread care: while a model is being built, transformers changes state that is
global to the process, not to the thread:
  * ``transformers`` resolves its public names lazily (``_LazyModule.__getattr__`` imports the
    submodule on first use); two threads resolving names at once can see a half-imported module
    ("cannot import name 'AutoModelForCausalLM' from 'transformers'"), and the failed import stays
    in ``sys.modules`` for the rest of the process;
  * ``from_pretrained`` builds the model on the meta device and with ``torch.nn.init`` functions
    patched out, and ``from_config``/``__init__`` set the default dtype; a second model built meanwhile
    in another thread picks that up ("Cannot copy out of meta tensor", an untied or re-initialised
    ``lm_head``).
So every model construction in lnfree (``models.load_model``, export's stock-model build) holds
``HF_BUILD_LOCK``. It is re-entrant: ``load_model`` of a demo name calls itself. Forward passes
do not take it: models run concurrently once built.
"""

from __future__ import annotations

import threading

HF_BUILD_LOCK = threading.RLock()
