"""Suite-wide settings.

Hypothesis: under CI (``CI`` set) examples are derandomized, so a CI run is reproducible and a
new random edge case cannot turn a build red without a code change; local runs explore fresh
random examples, and any seed they find failing is added to the tests' kept-seed lists.
"""

import os

from hypothesis import settings

settings.register_profile("ci", derandomize=True, database=None, print_blob=True)
settings.register_profile("dev", print_blob=True)
settings.load_profile("ci" if os.environ.get("CI") else "dev")
