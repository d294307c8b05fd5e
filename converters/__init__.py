"""Conversion of CNNs into AdderNets and ONNX export (installed as adderconv.converters)."""
