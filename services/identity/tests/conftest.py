from identity_testing import events, identity, network, service

__all__ = ["events", "identity", "network", "service"]
