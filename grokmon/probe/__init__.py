"""Probe sets: the fixed training samples that every probe routes through the model.

A probe set is built once (seeded), saved with the run and reloaded on resume, so the same samples
are probed before and after a restart. It can come from a Hugging Face ``datasets.Dataset`` (or any
indexable object with ``len()`` whose rows are dicts, tensors or lists of ids), a torch
``Dataset`` / ``DataLoader``, a tensor or list of token ids, or texts plus a tokenizer.

Bad input fails at construction with a :class:`~grokmon.errors.ProbeError` naming the fix: an
empty set, ``n`` larger than the dataset, samples shorter than ``min_length``, non-integer or
negative ids, ids outside the model's vocabulary (:meth:`ProbeSet.validate`), a groups list whose
length differs from the samples, and groups with a single sample (pathway distance compares pairs
of samples within a group).

Modules: ``probeset`` (the :class:`ProbeSet` type: shard, save, fingerprint, validate),
``sources`` (the ``from_*`` constructors), ``parsing`` (rows, batches, group labels),
``sampling`` (seeded and stratified selection), ``checks`` (every probe-input check, also used by
:func:`grokmon.routing.capture_pathways`).

Example:
    >>> import torch
    >>> probe = ProbeSet.from_token_ids(torch.arange(40).reshape(4, 10), groups=["a", "a", "b", "b"], min_length=4)
    >>> probe.group_counts()
    {'a': 2, 'b': 2}
"""

from __future__ import annotations

from .probeset import ProbeSet
from .sampling import stratified_counts

__all__ = ["ProbeSet", "stratified_counts"]
