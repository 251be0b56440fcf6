"""Alembic migrations of the ticket core database."""
