"""The ONNX graph interpreter moved to :mod:`facemagic_core.onnx_graph` (the analysis runners use it too).

This name stays so that training code and saved scripts that import it keep working; it is the
same module object's contents (``OPS`` is the same table, so a patched operator applies to both).
"""

from ..onnx_graph import (
    OPS,
    SUPPORTED_OPS,
    GraphNode,
    OnnxGraphModule,
    check_against_onnxruntime,
)

__all__ = ["OPS", "SUPPORTED_OPS", "GraphNode", "OnnxGraphModule", "check_against_onnxruntime"]
