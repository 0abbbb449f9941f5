"""Scorers: answer matching, voting, judges, step checkers."""
