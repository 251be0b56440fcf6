"""Tests of the ticket core: storage on SQLite and PostgreSQL, the agent API."""
