from kit_testing import service, stack

__all__ = ["service", "stack"]
