"""Training under DeepSpeed: typed run configs, one loop for every stage, exact resume, metrics.

Import what you use from its module (``llava_ov.train.trainer.train``, ``llava_ov.train.config``,
``llava_ov.train.distributed``...): this package file imports nothing, so that loading one module
(``distributed`` from a test or a benchmark) does not load the LMM trainer. The map of the modules is in
``docs/architecture.md``.
"""
