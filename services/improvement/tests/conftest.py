from improvement_testing import database_url, h, improvement, service

__all__ = ["database_url", "h", "improvement", "service"]
