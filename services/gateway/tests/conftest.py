from gateway_testing import shared_stack, stack

__all__ = ["shared_stack", "stack"]
