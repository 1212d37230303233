"""The Serve deployments: the router, an expert group, and the registry of live replicas they share."""
