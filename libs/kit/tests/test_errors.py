import pytest

from collabnet_kit import errors


def test_validator_reports_every_wrong_field_at_once() -> None:
    check = errors.Validator()
    check.require(False, "rating", "must be between 1 and 5")
    check.require(True, "title", "must not be empty")
    check.require(False, "body", "must not be empty")
    with pytest.raises(errors.InvalidArgument) as raised:
        check.raise_if_any()
    assert [v.field for v in raised.value.violations] == ["rating", "body"]
    assert raised.value.message == "rating: must be between 1 and 5; body: must not be empty"


def test_validator_without_violations_does_not_raise() -> None:
    check = errors.Validator()
    check.require(True, "rating", "must be between 1 and 5")
    check.raise_if_any()
    assert check.violations == []


def test_field_shortcut_names_the_field_in_message_and_violation() -> None:
    error = errors.InvalidArgument.field("review.body", "must be at most 10000 characters")
    assert error.message == "review.body: must be at most 10000 characters"
    assert error.violations == [errors.FieldViolation("review.body", "must be at most 10000 characters")]


def test_domain_module_imports_nothing_from_infrastructure() -> None:
    import ast
    import inspect

    tree = ast.parse(inspect.getsource(errors))
    imported = {
        alias.name.split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.Import | ast.ImportFrom)
        for alias in (node.names if isinstance(node, ast.Import) else [ast.alias(node.module or "")])
    }
    assert imported <= {"__future__", "dataclasses"}
