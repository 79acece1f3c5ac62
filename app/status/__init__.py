"""What a client asks before it starts: is the LLM up, which file types and limits the API accepts."""
