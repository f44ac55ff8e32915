from supplychain_testing import chain, events, identity, identity_database_url, services, supplychain

__all__ = ["chain", "events", "identity", "identity_database_url", "services", "supplychain"]
