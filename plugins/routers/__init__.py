"""Routers: which runtime writes each generation (GlimpRouter, budget-aware)."""
