"""salience: an OpenAI-compatible proxy that gives companion apps a memory."""

__version__ = "0.1.0"
