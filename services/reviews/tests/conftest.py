from reviews_testing import identity_database_url, identity_service, service, world

__all__ = ["identity_database_url", "identity_service", "service", "world"]
