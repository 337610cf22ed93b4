"""The pure parts of `bench.peers` (the side-by-side with Oathkeeper and gubernator): the
tampered token no verifier may accept, hey's and vegeta's reports read right (a non-200 answer
or an error is never lost), vegeta's targets (one fresh token per request), the fresh tokens
handed out once, the peers' configs, the CPU split and the table."""

from __future__ import annotations

import contextlib
import math
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import jwt
import pytest
from bench.peers import configs, vegeta
from bench.peers.__main__ import Options, measure, parse_args, split_cpus
from bench.peers.load import Loaded, Target, hey_command, parse_hey, status_field
from bench.peers.procs import BenchError
from bench.peers.report import Result, line, ratios, table
from bench.peers.rows import Run, Serving, judge_uncached
from bench.peers.tokens import TokenPool, tokens_needed
from cryptography.hazmat.primitives.asymmetric import ec

HEY_REPORT = """
Summary:
  Total:\t10.0107 secs
  Requests/sec:\t12497.2188

Latency distribution:
  10% in 0.0015 secs
  50% in 0.0024 secs
  99% in 0.0057 secs

Status code distribution:
  [200]\t125000 responses
  [401]\t3 responses

Error distribution:
  [7]\tGet "http://127.0.0.1:8000/": dial tcp 127.0.0.1:8000: connect: connection refused
  [2]\tGet "http://127.0.0.1:8000/": EOF
"""


VEGETA_REPORT = """{"latencies":{"total":5443210000,"mean":110000000,"50th":112520000,
"90th":150000000,"95th":170000000,"99th":186910000,"max":240000000,"min":30000000},
"bytes_in":{"total":0,"mean":0},"bytes_out":{"total":0,"mean":0},
"earliest":"2026-11-30T08:27:40.1Z","latest":"2026-11-30T08:27:42.1Z",
"end":"2026-11-30T08:27:42.2Z","duration":2000000000,"wait":100000000,"requests":560,
"rate":280.0,"throughput":264.3,"success":0.98,"status_codes":{"200":549,"401":3,"0":8},
"errors":["401 Unauthorized","Get \\"http://127.0.0.1:1/\\": connection refused"]}
"""


def es256_token(**claims: object) -> tuple[str, ec.EllipticCurvePublicKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = int(datetime.now(UTC).timestamp())
    body = {"iss": "authbus", "aud": "authbus", "sub": "acc-1", "iat": now, **claims}
    return jwt.encode(body, key, algorithm="ES256", headers={"kid": "k1"}), key.public_key()


def test_a_tampered_token_keeps_its_claims_and_fails_its_signature() -> None:
    token, public = es256_token(scope="read")
    bad = configs.tampered(token)

    assert bad != token
    assert bad.rsplit(".", 1)[0] == token.rsplit(".", 1)[0]  # header and claims untouched
    assert jwt.decode(token, public, algorithms=["ES256"], audience="authbus")["sub"] == "acc-1"
    with pytest.raises(jwt.InvalidSignatureError):
        jwt.decode(bad, public, algorithms=["ES256"], audience="authbus")


def test_tampering_changes_the_signature_bytes_not_only_padding_bits() -> None:
    token, _ = es256_token()
    signature, tampered_signature = token.rsplit(".", 1)[1], configs.tampered(token).rsplit(".")[2]

    def raw(s: str) -> bytes:
        return jwt.utils.base64url_decode(s)

    assert raw(signature) != raw(tampered_signature)
    with pytest.raises(ValueError, match="JWS"):
        configs.tampered("no-dots-here")


def test_claims_are_read_without_verifying() -> None:
    token, _ = es256_token(scope="read write")

    assert configs.claims(token)["scope"] == "read write"
    assert configs.claims(token)["aud"] == "authbus"


def test_hey_report_counts_every_status_and_error() -> None:
    loaded = parse_hey(HEY_REPORT)

    assert loaded.rps == pytest.approx(12497.2188)
    assert loaded.p50_ms == pytest.approx(2.4)
    assert loaded.p99_ms == pytest.approx(5.7)
    assert loaded.statuses == {200: 125000, 401: 3}
    assert loaded.errors == 9
    assert loaded.answered == 125003
    assert loaded.not_ok == 12  # 3 answers not 200, 9 requests without an answer


def test_a_percentile_hey_left_out_is_not_a_number() -> None:
    loaded = parse_hey("Requests/sec:\t40.0\n  0% in 0.0000 secs\n  [200]\t40 responses\n")

    assert math.isnan(loaded.p99_ms)
    assert loaded.not_ok == 0
    with pytest.raises(ValueError, match="not a hey report"):
        parse_hey("connection refused")


def test_hey_is_pinned_and_sends_the_method_headers_and_body() -> None:
    target = Target(
        "http://127.0.0.1:1/v1/GetRateLimits",
        method="POST",
        headers={"Authorization": "Bearer t"},
        body=Path("run/body.json"),
    )
    argv = hey_command(
        Path("/hey"), target, seconds=2, concurrency=32, cpus="1", taskset="/usr/bin/taskset"
    )

    assert argv[:4] == ["/usr/bin/taskset", "-c", "1", "/hey"]
    assert argv[4:8] == ["-z", "2s", "-c", "32"]
    assert "-m" in argv and argv[argv.index("-m") + 1] == "POST"
    assert argv[argv.index("-H") + 1] == "Authorization: Bearer t"
    assert argv[argv.index("-D") + 1] == "run/body.json"
    assert argv[argv.index("-T") + 1] == "application/json"
    assert argv[-1] == target.url


def oathkeeper_regexp(url: str) -> re.Pattern[str]:
    """How Oathkeeper's `regexp` matcher reads a rule's URL: `<...>` a regular expression, the
    rest literal, the whole URL anchored."""
    parts = re.split(r"(<[^>]+>)", url)
    body = "".join(p[1:-1] if p.startswith("<") else re.escape(p) for p in parts)
    return re.compile(f"^{body}$")


def test_the_oathkeeper_rule_matches_the_decision_path_and_only_it() -> None:
    (rule,) = configs.oathkeeper_rules(4456)
    pattern = oathkeeper_regexp(rule["match"]["url"])

    assert pattern.match("http://127.0.0.1:4456" + configs.RESOURCE)
    assert not pattern.match("http://127.0.0.1:4456/v1/things/42/more")
    assert not pattern.match("http://127.0.0.1:4457" + configs.RESOURCE)
    assert rule["match"]["methods"] == ["GET"]
    assert [a["handler"] for a in rule["authenticators"]] == ["jwt"]
    assert rule["authorizer"] == {"handler": "allow"}
    assert rule["mutators"] == [{"handler": "noop"}]


def test_oathkeeper_checks_what_authbus_checks_of_a_token() -> None:
    ports = {"api": 1, "proxy": 2, "prometheus": 3}
    rendered = configs.oathkeeper_config(
        ports=ports,
        rules_url="file:///tmp/r/rules.json",
        jwks_url="file:///tmp/r/jwks.json",
        token_claims={"iss": "authbus", "aud": "authbus", "scope": "read"},
    )
    jwt_config = rendered["authenticators"]["jwt"]["config"]

    assert jwt_config["jwks_urls"] == ["file:///tmp/r/jwks.json"]
    assert jwt_config["allowed_algorithms"] == ["ES256"]  # Oathkeeper's default is RS256
    assert jwt_config["trusted_issuers"] == ["authbus"]
    assert jwt_config["target_audience"] == ["authbus"]
    assert jwt_config["required_scope"] == [configs.SCOPE]
    assert rendered["serve"]["api"] == {"host": "127.0.0.1", "port": 1}
    assert rendered["access_rules"]["repositories"] == ["file:///tmp/r/rules.json"]
    assert rendered["log"]["level"] == "warn"  # no line per request, as authbus


def test_gubernator_is_its_own_single_peer_and_counts_one_hit_per_request() -> None:
    env = configs.gubernator_env(http=1, grpc=2, gossip=3)
    body = configs.gubernator_body("acct:x")
    (request,) = body["requests"]

    assert env["GUBER_MEMBERLIST_KNOWN_NODES"] == env["GUBER_MEMBERLIST_BIND_ADDRESS"]
    assert env["GUBER_ADVERTISE_ADDRESS"] == env["GUBER_GRPC_ADDRESS"] == "127.0.0.1:2"
    assert request["hits"] == 1
    assert request["limit"] == configs.LIMIT
    assert request["duration"] == configs.WINDOW_S * 1000
    assert configs.gubernator_body("acct:x", hits=0)["requests"][0]["hits"] == 0


def test_the_authbus_route_needs_the_scope_and_the_policy_refuses_nothing() -> None:
    assert f'scopes = ["{configs.SCOPE}"]' in configs.AUTHBUS_ROUTES
    assert 'path = "/v1/things/{id}"' in configs.AUTHBUS_ROUTES
    assert f"limit = {configs.LIMIT}" in configs.AUTHBUS_POLICIES
    headers = configs.forward_auth_headers("t")
    assert headers["X-Original-URI"] == configs.RESOURCE
    assert headers["Authorization"] == "Bearer t"


def test_servers_and_load_generator_get_different_cpus_when_there_are_enough() -> None:
    assert split_cpus({1, 0}, 1) == ("0", "1")
    assert split_cpus([0, 1, 2, 3], 2) == ("0,1", "2,3")
    assert split_cpus([0], 1) == ("0", "0")  # one CPU: shared, nothing else to do


def test_peak_rss_is_read_from_proc_status() -> None:
    status = "Name:\tpython\nVmHWM:\t  204800 kB\nVmRSS:\t  102400 kB\n"

    assert status_field(status, "VmHWM") == 204800
    assert status_field(status, "VmSwap") is None


def loaded(rps: float, p99: float, statuses: dict[int, int] | None = None) -> Loaded:
    return Loaded(rps, p99 / 2, p99, statuses or {200: 1000})


def test_the_table_flags_a_failed_row_and_non_200_answers() -> None:
    good = Result("authbus forward-auth (cached)", "forward", loaded(12500, 5.5), 77.4)
    refused = Result("x", "reverse", loaded(100, 1, {200: 90, 401: 10}))
    broken = Result("y", "forward", problems=["a tampered token got 200, not 401"])
    text = table([good, refused, broken])

    assert "12,500" in line(good) and "5.50" in line(good) and "77" in line(good)
    assert not good.failed
    assert refused.failed and "FAILED: 10 answers not 200" in line(refused)
    assert broken.failed and "FAILED: a tampered token got 200" in line(broken)
    assert text.splitlines()[0].split()[:3] == ["row", "order", "req/s"]


def test_ratios_are_authbus_cached_over_each_peer_per_order() -> None:
    results = [
        Result("cached", "forward", loaded(12000, 6)),
        Result("cached", "reverse", loaded(10000, 5)),
        Result("oathkeeper", "forward", loaded(4000, 90)),
        Result("oathkeeper", "reverse", loaded(5000, 50)),
        Result("gubernator", "forward", problems=["would not start"]),
    ]
    text = ratios(results, "cached", ("forward", "reverse"))
    oathkeeper = next(x for x in text.splitlines() if x.startswith("oathkeeper"))
    gubernator = next(x for x in text.splitlines() if x.startswith("gubernator"))

    assert oathkeeper.split()[1:] == ["3.00", "0.07", "2.00", "0.10"]
    assert gubernator.split()[1:] == ["-", "-", "-", "-"]


def test_a_wrong_answer_fails_its_row_loudly_and_the_run_goes_on() -> None:
    def check() -> None:
        raise BenchError("Oathkeeper /decisions (jwt): a tampered token got 200, not 401")

    @contextlib.contextmanager
    def accepts_a_tampered_token(run: Run) -> Iterator[Serving]:
        check()  # as the real rows check, before any load
        yield Serving(Target("http://127.0.0.1:1/"), [])

    opts = Options(seconds=1, concurrency=1, cores=1, keep=False)
    result = measure(None, "peer", accepts_a_tampered_token, opts, "forward")  # type: ignore[arg-type]

    assert result.failed
    assert result.loaded is None
    assert "a tampered token got 200" in line(result)


def test_vegeta_targets_give_each_request_its_own_token_and_the_forward_auth_headers() -> None:
    text = vegeta.targets(
        "http://127.0.0.1:8/v0/forward-auth", ["t1", "t2"], configs.forward_auth_headers
    )
    blocks = text.rstrip("\n").split("\n\n")

    assert text.endswith("\n") and len(blocks) == 2
    for block, token in zip(blocks, ["t1", "t2"], strict=True):
        request, *headers = block.split("\n")
        assert request == "GET http://127.0.0.1:8/v0/forward-auth"
        assert headers == [
            f"Authorization: Bearer {token}",
            "X-Original-Method: GET",
            f"X-Original-URI: {configs.RESOURCE}",
        ]
    with pytest.raises(ValueError, match="line break"):
        vegeta.targets("http://h/", ["a\nGET http://evil/"], configs.forward_auth_headers)


def test_vegeta_is_a_pinned_closed_loop_reading_its_targets_once() -> None:
    argv = vegeta.attack_command(
        Path("/vegeta"),
        Path("run/0.targets"),
        Path("run/0.bin"),
        seconds=5,
        concurrency=32,
        cpus="1",
        taskset="/usr/bin/taskset",
    )

    assert argv[:5] == ["/usr/bin/taskset", "-c", "1", "/vegeta", "attack"]
    assert "-rate=0" in argv  # as fast as answered: a closed loop, like hey
    assert "-workers=32" in argv and "-max-workers=32" in argv  # hey's -c 32
    assert "-lazy" in argv  # used up, it stops: no token sent twice
    assert {"-format=http", "-targets=run/0.targets", "-output=run/0.bin"} <= set(argv)
    assert "-duration=5s" in argv


def test_vegeta_report_counts_every_status_and_request_without_an_answer() -> None:
    loaded, errors = vegeta.parse_report(VEGETA_REPORT)

    assert loaded.rps == pytest.approx(264.3)  # throughput: answers 2xx per second
    assert loaded.p50_ms == pytest.approx(112.52)
    assert loaded.p99_ms == pytest.approx(186.91)
    assert loaded.statuses == {200: 549, 401: 3}
    assert loaded.errors == 8  # status 0: no answer
    assert loaded.not_ok == 11
    assert vegeta.RAN_OUT not in errors and len(errors) == 2
    with pytest.raises(ValueError, match="not a vegeta report"):
        vegeta.parse_report('{"requests": 0}')


def test_fresh_tokens_are_shared_by_load_length_and_never_handed_out_twice() -> None:
    pool = TokenPool([f"t{i}" for i in range(100)], planned_s=10, load_s=3)

    warm_up, load = pool.take(2), pool.take(3)
    rest = pool.take(10)  # more than is left: what is left

    assert pool.per_second == 10
    assert (len(warm_up), len(load), len(rest)) == (20, 30, 50)
    assert len(set(warm_up + load + rest)) == 100
    assert pool.take(1) == []


def test_enough_fresh_tokens_by_default_for_the_uncached_rows_loads() -> None:
    opts = parse_args(["--seconds", "10"])
    short = parse_args(["--seconds", "2", "--uncached-tokens", "500"])

    assert opts.uncached_seconds == 5  # capped: minting is slow
    assert opts.uncached_planned_s == 2 * (2 + 5)  # both orders, warm-ups too
    assert opts.uncached_tokens == tokens_needed(14, 1000) == 14_000
    assert (short.uncached_seconds, short.uncached_tokens) == (2, 500)


def test_the_uncached_row_fails_on_a_cache_hit_or_answers_without_authz() -> None:
    answered = Loaded(300, 100, 190, {200: 1000})
    honest = {"cache hits": 0, "cache misses": 1000, "authz verifications": 1001}
    shared = honest | {"authz verifications": 30}  # one question for many answers
    hit = honest | {"cache hits": 5}

    notes, problems = judge_uncached(honest, answered)
    assert problems == []
    assert "cache hits 0" in notes and "authz verifications/answer 1.00" in notes
    assert judge_uncached(shared, answered)[1] == ["only 0.03 authz verifications per answer"]
    assert judge_uncached(hit, answered)[1] == ["the verdict cache answered"]
