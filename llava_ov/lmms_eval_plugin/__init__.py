"""lmms-eval plugin: our LMM as lmms-eval model ``llava_ov``, registered through the ``lmms_eval.models``
entry point in ``pyproject.toml`` (lmms-eval installed unmodified; nothing vendored or patched).

This module is what the entry point loads, so it stays import-light: :func:`manifest` names the class
(:class:`llava_ov.lmms_eval_plugin.model.LlavaOVLmms`) and lmms-eval imports it only when it is used.
"""

from __future__ import annotations

MODEL_ID = "llava_ov"
CLASS_PATH = "llava_ov.lmms_eval_plugin.model.LlavaOVLmms"


def manifest():
    """The ``ModelManifest`` lmms-eval's registry reads from our entry point."""
    from lmms_eval.models.registry_v2 import ModelManifest

    return ModelManifest(model_id=MODEL_ID, simple_class_path=CLASS_PATH)


__all__ = ["CLASS_PATH", "MODEL_ID", "manifest"]
