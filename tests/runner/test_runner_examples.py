"""Example configs stay valid; the explained main job is the main job; every key is documented."""

from __future__ import annotations

import re

import pytest

from backtest.runner import check_settings, load_config, main_job
from runner_kit import ROOT

EXAMPLES = sorted((ROOT / "examples").glob("*.toml"))


def test_the_examples_exist():
    assert {p.name for p in EXAMPLES} >= {"main_job_explained.toml", "sweep_trend.toml", "coin_margined.toml"}


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_is_valid_without_data(path):
    assert check_settings(load_config(path)) == []


def test_explained_main_job_is_the_main_job():
    explained = load_config(ROOT / "examples" / "main_job_explained.toml")
    assert explained == main_job()
    assert explained.run_id("fp") == main_job().run_id("fp")


def test_explained_main_job_comments_every_key():
    lines = (ROOT / "examples" / "main_job_explained.toml").read_text().splitlines()
    for line in lines:
        if re.match(r"^\s*[a-z_]+\s*=", line) and not line.strip().startswith("#"):
            key = line.split("=")[0].strip()
            # a comment on the line, or on the indented lines of the list it opens
            assert "#" in line or line.rstrip().endswith("["), f"key {key!r} has no comment: {line!r}"


def test_coin_margined_example_says_to_download_first():
    text = (ROOT / "examples" / "coin_margined.toml").read_text()
    head = text[: text.index("title")]
    assert "backtest download -e binancecoinm -s BTC/USD:BTC" in head
    cfg = load_config(ROOT / "examples" / "coin_margined.toml")
    assert (cfg.data.exchange, cfg.data.symbol) == ("binancecoinm", "BTC/USD:BTC")


def runner_doc() -> str:
    """docs/runner.md, or the README once it has been merged there."""
    path = ROOT / "docs" / "runner.md"
    return (path if path.is_file() else ROOT / "README.md").read_text()


SECTIONS = {
    "### Top level": "RunConfig", "### `[data]`": "DataConfig", "### `[[perp]]`": "PerpConfig",
    "### `[perp.strategy]`": "StrategyConfig", "### `[perp.account]`": "AccountConfig",
    "### `[[puts]]`": "PutsConfig", "### `[[products]]`": "ProductConfig", "### `[sweep]`": "SweepConfig",
}


def documented_keys(doc: str, heading: str) -> set[str]:
    """Keys in the first cell of the table rows of one section of docs/runner.md."""
    start = doc.index(heading)
    end = doc.find("\n#", start + len(heading))
    section = doc[start:end if end >= 0 else None]
    keys = set()
    for line in section.splitlines():
        if line.startswith("| `"):
            keys |= set(re.findall(r"`([a-z_]+)`", line.split("|")[1]))
    return keys


@pytest.mark.parametrize("heading", list(SECTIONS))
def test_every_config_key_is_documented_in_its_table(heading):
    import backtest.runner.config as config

    model = getattr(config, SECTIONS[heading])
    doc = runner_doc()
    assert documented_keys(doc, heading) == set(model.model_fields)
