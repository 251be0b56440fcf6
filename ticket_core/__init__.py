"""The ticket core: storage, threading, identities and the agent API."""
