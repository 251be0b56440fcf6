"""The end-to-end benchmark: `make bench` (see bench/README.md)."""
