from identity_testing import database_url, events, identity, network, service

__all__ = ["database_url", "events", "identity", "network", "service"]
