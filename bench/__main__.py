"""`python -m bench`: run the benchmark (the Makefile's `bench` target calls this)."""

from .runner import main

raise SystemExit(main())
