"""Search strategies for the ``search`` graph."""
