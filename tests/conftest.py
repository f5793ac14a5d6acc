import os

import pytest

os.environ.setdefault("TORCH_HOME", os.path.join(os.path.dirname(__file__), ".torch_home_unused"))


@pytest.fixture(autouse=True)
def _reset_settings():
    from s2rcli.console import settings

    saved = (settings.verbose, settings.quiet, settings.device)
    yield
    settings.verbose, settings.quiet, settings.device = saved
