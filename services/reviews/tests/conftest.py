from reviews_testing import database_url, identity_database_url, identity_service, service, world

__all__ = ["database_url", "identity_database_url", "identity_service", "service", "world"]
