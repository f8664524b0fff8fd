"""The HTTP surface: the OpenAI-compatible proxy, the memory API and traces."""
