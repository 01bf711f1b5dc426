"""The bundle: opening it (session, manifest), reading its ONNX file without onnx, its rules and its vocabulary."""
