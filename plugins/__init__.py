"""Built-in plugins; installed as ``orchestrator.plugins``."""
