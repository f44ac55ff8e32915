from improvement_testing import h, improvement, service

__all__ = ["h", "improvement", "service"]
