"""LLM serving (the FastChat stack and our llama.cpp worker) and the OpenAI-compatible client."""
