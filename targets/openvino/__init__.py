"""OpenVINO backend (targets/openvino/backend.py)."""
