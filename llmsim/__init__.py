"""llmsim: an OpenAI-compatible LLM simulator for testing AI gateways."""

__version__ = "0.1.0"
