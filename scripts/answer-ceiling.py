#!/usr/bin/env python3
"""PostgreSQL's own ceiling for the answer path: the service's answer commit run by pgbench.

Writes into DIR, for a database the service has migrated:
  setup.sql       a model and SESSIONS J = 16 sessions with their profiles (rows of the sizes the
                  service writes: mean 138 B, covariance 1,098 B, question and settings JSON);
  answer.pgbench  the statement the service runs for an answer, as `CommitShape` builds it in
                  src/store/sql.rs for a commit with an answer and a profile (the session update
                  conditional on version and bank, the answer and profile upserts as CTEs), on a
                  random session; its values are pgbench variables, so they travel as bind
                  parameters as the service's do;
  defines         the variables' values, one `name=value` a line, for `pgbench -D`;
  without-profile.pgbench, lean.pgbench
                  two lighter variants, to see what storing less would save: the commit without
                  the profile upsert, and also without the posterior in the session row.

Run with `pgbench -n -M prepared -f DIR/answer.pgbench -D ...` at the service's client count, it
measures how many answers a second PostgreSQL could commit if HTTP, JSON and the engine cost
nothing. Session creations and finishes are left out, so it is an upper bound.
Usage: scripts/answer-ceiling.py DIR [SESSIONS]
"""
import json
import os
import random
import sys

J = 16
MODEL = "ceiling-model"
USER_PREFIX = "ceiling-6a77e123cb164191a594b921958418ce-c0-u"


def encoded(values):
    """Bytes of the size the service's codec gives `values` floats (10-byte header)."""
    return "\\x" + os.urandom(10 + 8 * values).hex()


def answer_response(rng):
    """An answer response body as the service sends it at J = 16 (about 2 KB)."""
    dims = [{"name": f"d{i}", "mean": rng.gauss(0, 0.3), "sd": rng.uniform(0.9, 1.0)} for i in range(J)]
    body = {
        "id": "01a23aa3-eba9-741c-9d09-c352d36b7d62", "status": "active", "version": 2,
        "answers": 1, "max_questions": 10, "bits": rng.random(), "stop_reason": None,
        "posterior": {"dimensions": dims, "mean": [d["mean"] for d in dims], "sd": [d["sd"] for d in dims]},
        "question": {"id": "2", "items": [{"id": "i23", "payload": None}, {"id": "i39", "payload": None}],
                     "information_bits": rng.random()},
    }
    return json.dumps(body, separators=(",", ":"))


def main():
    out = sys.argv[1]
    sessions = int(sys.argv[2]) if len(sys.argv) > 2 else 20000
    rng = random.Random(1)
    os.makedirs(out, exist_ok=True)
    values = {
        "mean": encoded(J),
        "cov": encoded(J * (J + 1) // 2),
        "direction": encoded(J),
        "question": '{"id":"3","item_a":"i23","item_b":"i39","information_bits":0.86}',
        "response": answer_response(rng),
        "request_hash": "5bd77642e7e4266b2f8001a180153978fc6954a584b4c63df56220b3dec05299",
    }
    sid = "lpad(g::text, 36, '0')"
    with open(os.path.join(out, "setup.sql"), "w") as f:
        f.write(f"""
INSERT INTO models (name, spec, prior_mean, prior_cov, bank_version, created_ms)
VALUES ('{MODEL}', '{{}}', '{values["mean"]}', '{values["cov"]}', 1, 1);
INSERT INTO sessions (id, user_id, model, token_hash, status, stop_reason, settings, mean, cov, version, answers, question, created_ms, updated_ms, prior_version)
SELECT {sid}, '{USER_PREFIX}' || g, '{MODEL}', md5(g::text) || md5(g::text), 'active', NULL,
       '{{"max_questions":10,"strategy":"bald","items":null}}', '{values["mean"]}', '{values["cov"]}', 1, 0, '{values["question"]}', 1, 1, 1
FROM generate_series(1, {sessions}) g;
INSERT INTO profiles (user_id, model, session_id, status, mean, cov, version, answers, updated_ms, unreliable, prior_version)
SELECT '{USER_PREFIX}' || g, '{MODEL}', {sid}, 'active', '{values["mean"]}', '{values["cov"]}', 1, 0, 1, 0, 1
FROM generate_series(1, {sessions}) g;
ANALYZE sessions; ANALYZE profiles; ANALYZE answers;
""")
    session = "lpad((:s)::text, 36, '0')"
    user = f"'{USER_PREFIX}' || (:s)::text"
    # The version condition of the service's update (`version = $10`) becomes `version >= 0`:
    # pgbench cannot know each session's version, and the plan (an index scan on the id) is the same.
    script = f"""\\set s random(1, {sessions})
\\set seq random(1, 2000000000)
WITH upd AS (UPDATE sessions SET status = 'active', stop_reason = NULL, mean = (:mean)::bytea, cov = (:cov)::bytea, version = version + 1, answers = answers + 1, question = :question, updated_ms = (:seq)::bigint
  WHERE id = {session} AND version >= 0
  AND EXISTS (SELECT 1 FROM models m WHERE m.name = sessions.model AND m.created_ms = 1 AND m.bank_version = 1) RETURNING 1),
w0 AS (INSERT INTO answers (session_id, user_id, seq, item_a, item_b, choice, log_evidence, direction, idempotency_key, request_hash, created_ms, lapse, strength, shown, chosen, response)
  SELECT {session}, {user}, (:seq)::bigint, 'i23', 'i39', 'b', -0.69, (:direction)::bytea, {session} || '-' || (:seq)::text, :request_hash, (:seq)::bigint, 0, NULL, NULL, NULL, :response
  WHERE EXISTS (SELECT 1 FROM upd)),
w1 AS (INSERT INTO profiles (user_id, model, session_id, status, mean, cov, version, answers, updated_ms, unreliable, prior_version)
  SELECT {user}, '{MODEL}', {session}, 'active', (:mean)::bytea, (:cov)::bytea, 2, 1, (:seq)::bigint, 0, 1 WHERE EXISTS (SELECT 1 FROM upd)
  ON CONFLICT (user_id, model) DO UPDATE SET session_id = excluded.session_id, status = excluded.status,
  mean = excluded.mean, cov = excluded.cov, version = profiles.version + 1, answers = excluded.answers, updated_ms = excluded.updated_ms,
  unreliable = excluded.unreliable, prior_version = excluded.prior_version)
SELECT 1 AS applied FROM upd;
"""
    without_profile = script[: script.index(",\nw1 AS")] + "\n" + script[script.index("SELECT 1 AS applied"):]
    lean = without_profile.replace("mean = (:mean)::bytea, cov = (:cov)::bytea, ", "")
    for name, text in [("answer", script), ("without-profile", without_profile), ("lean", lean)]:
        with open(os.path.join(out, f"{name}.pgbench"), "w") as f:
            f.write(text)
    with open(os.path.join(out, "defines"), "w") as f:
        for name, value in values.items():
            f.write(f"{name}={value}\n")


if __name__ == "__main__":
    main()
