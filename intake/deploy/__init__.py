"""The deployment files of `deploy/`, rendered from the code so that they never drift.

The services come from the code (`ticket-core`, `router`, and every connector that
`intake connectors list` finds, with its ports, HTTP routes and sender); the topology from
`intake.bus.topology`. `intake deploy render --write` rewrites the generated files (compose,
the reverse proxy, the Kubernetes services, the RabbitMQ definitions, the systemd service
list); `--check` fails while one is stale, as a test does. A new connector appears in every
one of them by running it once.
"""
