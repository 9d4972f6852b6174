"""The test suite (a package, so that helper modules such as ``tests.fake_study`` import by name
and are not collected as test files)."""
