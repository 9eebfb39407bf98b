"""The faces of sarbridge: Python API, command line, web viewer, HTML report and ONNX export."""
