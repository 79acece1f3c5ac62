"""Chat: LLM 对话, 知识库问答 and 知识库测试, the prompts they fill and the conversations they keep."""
