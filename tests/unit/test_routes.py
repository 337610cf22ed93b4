"""Declared routes from configuration (SPEC E4) and the policies they add (R2)."""

from __future__ import annotations

from pathlib import Path

import pytest

from authbus_api.core.routing import Matched, WrongMethod
from authbus_api.policies import load_policies, with_routes
from authbus_api.routes import load_routes
from authbus_shared.settings import ConfigError

CONFIG = Path(__file__).parents[2] / "config"


def test_the_example_file_loads_and_matches_by_template_and_method() -> None:
    table = load_routes(CONFIG / "routes.toml")

    found = table.match("/v1/projects/7", "PUT")
    head = table.match("/v1/projects/7", "HEAD")
    wrong = table.match("/v1/projects", "DELETE")

    assert isinstance(found, Matched)
    assert found.params == {"id": "7"}
    assert found.route.route_id("PUT") == "PUT /v1/projects/{id}"
    assert isinstance(head, Matched)  # HEAD goes where GET goes
    assert wrong == WrongMethod(("GET", "HEAD", "POST"))
    assert table.match("/v1/nothing", "GET") is None
    assert table.match("/v2/reports/2026/q1", "GET") is not None


def test_no_file_means_no_routes() -> None:
    assert load_routes(None).match("/anything", "GET") is None


def test_a_route_adds_the_policies_it_names_only_there() -> None:
    """R2: "writes" (every_route = false) applies to the routes naming it, nowhere else."""
    routes = load_routes(CONFIG / "routes.toml")
    policies = {
        p.lease.name: p for p in with_routes(load_policies(CONFIG / "rate-policies.toml"), routes)
    }

    assert policies["writes"].applies("POST /v1/projects", "account")
    assert policies["writes"].applies("GET /v1/projects", "account")
    assert not policies["writes"].applies("GET /v1/projects/{id}", "account")
    assert policies["global"].applies("GET /v1/projects/{id}", "account")


def test_a_route_naming_an_unknown_policy_stops_the_start(tmp_path: Path) -> None:
    path = tmp_path / "routes.toml"
    path.write_text(
        '[[route]]\npath = "/x"\nmethods = ["GET"]\nupstream = "http://u"\npolicies = ["nope"]\n'
    )

    with pytest.raises(ConfigError, match="nope"):
        with_routes(load_policies(None), load_routes(path))


@pytest.mark.parametrize(
    ("text", "names"),
    [
        ('[[route]]\npath = "x"\nmethods = ["GET"]\nupstream = "http://u"\n', "path"),
        ('[[route]]\npath = "/x"\nmethods = []\nupstream = "http://u"\n', "methods"),
        ('[[route]]\npath = "/x"\nmethods = ["BREW"]\nupstream = "http://u"\n', "methods"),
        ('[[route]]\npath = "/x"\nmethods = ["GET"]\nupstream = "nowhere"\n', "upstream"),
        ('[[route]]\npath = "/x"\nmethods = ["GET"]\nupstream = "http://u"\nspeed = 1\n', "speed"),
        ('[[route]]\npath = "/x/"\nmethods = ["GET"]\nupstream = "http://u"\n', "canonical"),
        ('[[route]]\npath = "/a/../b"\nmethods = ["GET"]\nupstream = "http://u"\n', "canonical"),
        ('[[route]]\npath = "/v0/me"\nmethods = ["GET"]\nupstream = "http://u"\n', "own paths"),
        ('[[route]]\npath = "/v0"\nmethods = ["GET"]\nupstream = "http://u"\n', "own paths"),
    ],
)
def test_a_bad_routes_file_fails_at_start_naming_the_problem(
    tmp_path: Path, text: str, names: str
) -> None:
    path = tmp_path / "routes.toml"
    path.write_text(text)

    with pytest.raises(ConfigError, match=names):
        load_routes(path)


def test_the_first_matching_template_wins(tmp_path: Path) -> None:
    path = tmp_path / "routes.toml"
    path.write_text(
        '[[route]]\npath = "/v1/special"\nmethods = ["GET"]\nupstream = "http://a"\n'
        '[[route]]\npath = "/v1/{rest:path}"\nmethods = ["GET"]\nupstream = "http://b"\n'
    )
    table = load_routes(path)

    special, other = table.match("/v1/special", "GET"), table.match("/v1/other", "GET")

    assert isinstance(special, Matched)
    assert isinstance(other, Matched)
    assert special.route.upstream == "http://a/"
    assert other.route.upstream == "http://b/"
