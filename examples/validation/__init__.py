"""The validation matrix: tiny MoE models of several families learn several tasks on the CPU while a
:class:`grokmon.GrokkingMonitor` watches, and held-out accuracy is recorded at every probe step.

``python -m examples.validation run`` trains the cells (resumable, cached per run);
``python -m examples.validation summary`` prints the tables of docs/validation.md from the cache.
"""
