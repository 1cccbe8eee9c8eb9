"""Deployment: ONNX export, ONNX Runtime and TensorRT backends, engine builds, benchmark."""
