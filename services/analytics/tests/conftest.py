from analytics_testing import database_url, network

__all__ = ["database_url", "network"]
