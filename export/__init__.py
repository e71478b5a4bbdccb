"""Export trained weights to ONNX (fp32, fp16, int8) and TensorRT, each gated on parity with PyTorch."""
