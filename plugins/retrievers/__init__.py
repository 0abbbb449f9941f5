"""Retrievers: documents for grounding (``orchestrator_add_retrievers``)."""
