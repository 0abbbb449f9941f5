"""Built-in runtimes; installed as ``orchestrator.runtimes``."""
