"""Escalation gates for the fast/slow ``cascade`` graph (confidence, disagreement, judge)."""
