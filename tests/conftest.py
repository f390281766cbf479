"""The test session's plugins: the shared fixtures (:mod:`tests.common.fixtures`, defined once for
every folder), the tier check (:mod:`tests.common.tiers`: a test that starts Ray, a server or a
pipeline subprocess must be marked ``integration``) and the two-worker schedule of ``make test``
(:mod:`tests.common.parallel`)."""

pytest_plugins = ["pytester", "tests.common.fixtures", "tests.common.tiers", "tests.common.parallel"]
