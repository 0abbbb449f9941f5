"""Memory plugins: what a generation's context holds, and how a live sequence is trimmed."""
