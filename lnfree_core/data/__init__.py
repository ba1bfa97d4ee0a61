"""lnfree's data layer: the GPT-2 tokenizer, the paper's datasets, token sequences, Pile-filtered.

Public API (details in each module):

* :func:`load_gpt2_tokenizer`, :data:`EOT_ID` -- tokenizer (Hub or bundled BPE, same ids).
* :func:`hub_reachable`, :class:`HubUnavailableError` -- fast, cached Hub availability.
* :func:`resolve_dataset`, :func:`list_datasets`, :class:`DatasetSpec` -- names and local paths.
* :func:`iter_sequences`, :func:`load_sequences`, :func:`dataset_info` -- sequences of token ids.
* :func:`build_filtered`, :class:`FilterReport` -- rebuild a Pile-filtered-style dataset.
"""

from lnfree_core.data.filter import FilterReport, RemovedToken, build_filtered
from lnfree_core.data.hub import HubUnavailableError, hub_reachable
from lnfree_core.data.registry import (
    DatasetNotFoundError,
    DatasetSpec,
    SplitSpec,
    list_datasets,
    resolve_dataset,
)
from lnfree_core.data.sources import dataset_info, iter_sequences, load_sequences
from lnfree_core.data.tokenizer import EOT_ID, load_gpt2_tokenizer

__all__ = [
    "EOT_ID",
    "DatasetNotFoundError",
    "DatasetSpec",
    "FilterReport",
    "HubUnavailableError",
    "RemovedToken",
    "SplitSpec",
    "build_filtered",
    "dataset_info",
    "hub_reachable",
    "iter_sequences",
    "list_datasets",
    "load_gpt2_tokenizer",
    "load_sequences",
    "resolve_dataset",
]
