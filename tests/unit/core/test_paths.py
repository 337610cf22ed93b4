"""Path normalisation (SPEC A11, RFC 3986 §6): one canonical form, or a refusal."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from authbus_api.core.paths import normalise


@pytest.mark.parametrize(
    ("raw", "canonical"),
    [
        ("/", "/"),
        ("/admin", "/admin"),
        ("/%61dmin", "/admin"),  # an unreserved character escaped
        ("/%41%44%4d%49%4e", "/ADMIN"),  # case stays significant
        ("/admin/", "/admin"),  # trailing slash
        ("//admin", "/admin"),  # repeated slashes
        ("/admin//", "/admin"),
        ("/./admin", "/admin"),
        ("/public/../admin", "/admin"),
        ("/public/%2e%2e/admin", "/admin"),  # encoded dot segment
        ("/public/%2E%2e/admin", "/admin"),
        ("/public/.%2e/admin", "/admin"),
        ("/a/b/c/../../admin", "/a/admin"),
        ("/files/caf%c3%a9", "/files/caf%C3%A9"),  # other escapes: upper-case hex, kept
        ("/files/a%20b", "/files/a%20b"),
        ("/files/a%3Bb", "/files/a%3Bb"),  # an escaped ";" is data
        ("/files/..x", "/files/..x"),  # not a dot segment
        ("/files/x..", "/files/x.."),
        ("/v1/items/7:archive", "/v1/items/7:archive"),
        ("/~user/it's+fine,(ok)!$&*=@", "/~user/it's+fine,(ok)!$&*=@"),
        ("/..%2e", "/..."),  # three dots: an ordinary segment
    ],
)
def test_a_path_has_one_canonical_form(raw: str, canonical: str | None) -> None:
    assert normalise(raw) == canonical


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "admin",  # not origin form
        "*",
        "/..",
        "/../admin",
        "/public/../../admin",
        "/public%2Fadmin",  # encoded slash
        "/public%2fadmin",
        "/public%5Cadmin",  # encoded backslash
        "/public\\admin",  # raw backslash
        "/admin%00",  # encoded NUL
        "/admin%0d%0aX-Injected:1",  # encoded CR LF
        "/admin%7F",
        "/%252e%252e/admin",  # encoded "%": a second decoding would change the path
        "/public/..;/admin",  # ";" path parameters (Tomcat, Spring)
        "/admin;jsessionid=1",
        "/admin%",  # malformed escapes
        "/admin%2",
        "/admin%zz",
        "/admin%%30",
        "/ad min",  # raw space
        "/admin\t",
        "/caf\u00e9",  # raw non-ASCII
        "/admin#frag",
        "/a<b>",
        "/a|b",
        "/a{b}",
        "/a[1]",
        '/a"b',
        "/a^b",
        "/a`b",
    ],
)
def test_an_ambiguous_or_malformed_path_is_refused(raw: str) -> None:
    assert normalise(raw) is None


PIECES = [*list("/.%2eEfF5cC0aA;b\\~ -_:@"), "%2e", "%2F", "%41", "%c3%a9", "//", ".."]
PATHS = st.lists(st.sampled_from(PIECES), max_size=30).map(lambda parts: "/" + "".join(parts))


@given(PATHS)
def test_normalising_is_idempotent_and_leaves_nothing_ambiguous(raw: str) -> None:
    once = normalise(raw)
    if once is None:
        return
    assert normalise(once) == once
    segments = once.split("/")[1:]
    assert once == "/" or all(s not in ("", ".", "..") for s in segments)
    assert "%2F" not in once.upper() and "%25" not in once and "\\" not in once
