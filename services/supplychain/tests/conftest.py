from supplychain_testing import chain, database_url, events, identity, identity_database_url, services, supplychain

__all__ = ["chain", "database_url", "events", "identity", "identity_database_url", "services", "supplychain"]
