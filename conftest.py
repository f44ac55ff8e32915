import sys
from pathlib import Path

# Each service's tests share helpers through a module named after the service
# (services/<name>/tests/<name>_testing.py), importable from any test.
for tests in sorted(Path(__file__).parent.glob("services/*/tests")):
    sys.path.insert(0, str(tests))

pytest_plugins = ["collabnet_kit.testing"]
