"""Integrations with LLM libraries: each module imports its library, so import the one you use."""
