"""Export of trained students for deployment (ONNX, int8)."""
