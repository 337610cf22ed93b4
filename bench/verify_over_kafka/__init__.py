"""Cold credential verification through Kafka, as the api sees it on a verdict-cache miss.

Run from the repository root (about 10 minutes with the defaults on 2 cores):

    .venv/bin/python -m bench.verify_over_kafka [--seconds 10] [--concurrency 8]
        [--rates 100,200] [--password-rates 10,20] [--arrivals poisson|fixed]
        [--authz 1,2] [--kinds bearer,key,password,password-wrong,password-unknown]
        [--warmup 1] [--broker-warmup 10] [--linger-ms N] [--record-cache on|off] [--keep]

What is measured: the round trip of `AuthzClient.verify(credential, partition_key=...)`, the
call the api makes on a miss. The credential is sealed to authz's key and produced to
`auth.verify.v1`; an authz instance (consumer group) opens it, checks it against MongoDB and
replies on the asker's partition of `authbus.replies.v1`. The kinds (`kinds.py`):
- `bearer`: an ES256 token (signature, then the token and account records, read together);
- `key`: a legacy `abk_` key with its email (checksum, record by digest, account);
- `password`: the right email and password (account, throttle lookup, argon2id);
- `password-wrong`: a wrong password for an existing account: argon2id against its hash, then
  what any failed login costs (a throttle count in MongoDB, an audit event on Kafka);
- `password-unknown`: an email with no account: the same argon2id work against a dummy hash,
  then the same failed-login costs. Its rows next to `password-wrong` show whether the timing
  tells that an email exists (SPEC A6); `password` differs from both by the failure's
  bookkeeping, which a right password does not pay.
  The throttle blocks an account (or unknown email) after 10 failures in 15 minutes, and a
  blocked check skips argon2; so both kinds move to a fresh email or account every 9 requests
  (password-wrong makes a few hundred accounts before its rows: some seconds of argon2).
Every reply is checked: anything but the expected verdict (`valid`; `invalid` for the wrong
and unknown ones), or no reply within 10 s, is counted under `bad`, never dropped.

How: the bench starts everything itself with the project's tooling. `authbus_dev.infra` starts
the real Kafka broker and SecantusDB on free loopback ports in a temp folder, and
`authbus_dev.fleet` starts only authz instances, with a fresh topic prefix and database per
fleet. All of it is stopped at the end, on an error and on Ctrl-C. The broker is first warmed
up (`--broker-warmup` seconds of Kafka hops, thrown away: its JVM compiles its hot paths in
the first minute, and until then a hop costs several times what it does later). Then the
baselines run (`baselines.py`), then each authz count and kind. Every kind and baseline gets
these rows (`load.py`), each after a `--warmup` at the same load that is thrown away:
- `closed:1`: one request at a time: the unloaded latency.
- `closed:N` (`--concurrency`, 8): a closed loop of N workers, each sending when its previous
  reply arrives. On 2 cores this saturates the machine: it measures throughput, and its
  latency is queueing for CPU (Little's law: p50 ~ N / verif/s). It is not moderate load.
- `open:R/s`: an open loop offering R requests per second whatever comes back, as independent
  clients do. This is moderate load, and where the target is judged (p99 <= 10 ms for bearer
  and key). Arrivals are Poisson by default (exactly R x seconds send times, uniform over the
  stretch: random gaps and bursts), `--arrivals fixed` spaces them evenly. Latency runs from
  the scheduled send time, so a backlog is charged to the system (no coordinated omission).
  R is `--rates` (100, 200) for bearer, key and the baselines, `--password-rates` (10, 20)
  for the argon2 kinds: a check costs about 20-40 ms of CPU with the default parameters and
  authz runs at most 2 at once per instance, so 2 cores hash a few dozen per second; a rate
  beyond that only measures a growing queue.

How to read the table:
- `p50/p99/max ms`: round trips, nearest-rank percentiles of the sorted samples. `p99*`
  marks rows with fewer than 100 samples; there p99 is the max.
- `verif/s`: completed requests per second of the stretch (until the last reply). Closed rows:
  the throughput. Open rows: the achieved rate; the row says `BEHIND` when it is under 95% of
  the offered rate or a backlog grew (the requests in flight at a send, averaged over the last
  quarter of the sends, above 2 + twice their average over the first quarter).
  `sends late`: the asker's own event loop sent behind schedule (its p99, when above 1 ms).
- `authz ms`: authz's own metric `authz_verify_duration_seconds`, the mean time it took to
  check one credential in that stretch: opening the sealed box, store reads, the signature or
  argon2 (including the wait for an argon2 thread), publishing audit events. A verification
  costs roughly `base:group` + `authz ms` + `base:kafka`; the rest is time in authz outside
  the check (decoding, replying, waiting for its event loop) and on this asker.
- `split`: the share of checks each authz instance answered.
- `cpu ms per request`: the CPU time each process used in the stretch, divided by the
  requests completed: the broker, SecantusDB, all authz instances together, and this bench
  (the asker). `other` is the CPU that none of those used (busy time from /proc/stat minus
  theirs). It should be near 0; more means something else on the machine competed for it and
  the latencies are not clean. The header and footer give the load average for the same reason.
- An open row can be slower than `closed:1` although less loaded: between requests the
  processes go idle, and each hop of a verification (asker, broker, authz, database, broker,
  asker) then waits for a sleeping process to be woken up, where a busy loop finds it awake.
  The baselines' rows show what that costs per hop on this machine.
- `target`: on the open rows of bearer and key: `met` when p99 <= 10 ms, no bad replies and
  the system kept up. The footer lists which rates meet it.
- baselines, on the same broker and database with no authz running: `base:kafka` (a hop read
  as the asker reads its replies: the reply leg), `base:group` (a hop read by the project's
  `GroupConsumer` as authz reads its requests: the request leg), `base:kafka0` (the same hop
  with linger 0; only when `--linger-ms` is not 0), `base:mongo` (one `find_one` by `_id`).

`--record-cache off` turns authz's record cache off (ADR 0019: `AUTHBUS_AUTHZ_RECORD_CACHE__
MAX_ENTRIES=0`), so every check reads MongoDB. With it on (the default) each kind's 64
credentials are read from MongoDB once and then answered from the cache: the rows measure an
authz that has seen the credential before (another api instance asked, or the api re-verifies),
`off` one that has not.
`--linger-ms` sets the producer linger on both sides: this asker, and authz through its
setting `AUTHBUS_AUTHZ_KAFKA__LINGER_MS`. By default the project's default is left alone.
Progress goes to stderr, the table to stdout, the services' logs to the run folder (kept with
`--keep` or after a failure).
"""
