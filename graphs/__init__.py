"""Built-in graphs; installed as ``orchestrator.graphs``."""
