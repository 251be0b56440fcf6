"""The router: routing rules, their hot reload, and the routing of each message."""
