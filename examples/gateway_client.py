#!/usr/bin/env python3
"""Rank candidate responses for one user with elicit's personalised scores.

A gateway-side client using only Python's standard library: it sends the candidates' features
(or bank item ids) to POST /v1/score and prints the user's ranking with each score's uncertainty.

    ELICIT_URL=http://127.0.0.1:8080 ELICIT_API_KEY=ek_... \
        python3 examples/gateway_client.py --model tone --user alice candidates.json

candidates.json is a list of candidates, each {"id": ..., "features": [one value per dimension]}
or {"item_id": ...} for an item of the model's bank. Exit status 0 on success, 1 on an error
answered by the service (its RFC 9457 problem is printed), 2 on bad usage.
"""

import argparse
import json
import os
import sys
import time
import urllib.error
import urllib.request


def score(base_url, api_key, model, user, candidates, timeout=5.0):
    """POST /v1/score; retries once after Retry-After on 429. Returns the decoded response."""
    body = json.dumps({"model": model, "user_id": user, "candidates": candidates}).encode()
    for attempt in range(2):
        request = urllib.request.Request(
            base_url.rstrip("/") + "/v1/score",
            data=body,
            method="POST",
            headers={"Authorization": "Bearer " + api_key, "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return json.load(response)
        except urllib.error.HTTPError as error:
            retry_after = error.headers.get("Retry-After")
            if error.code == 429 and attempt == 0 and retry_after:
                time.sleep(float(retry_after))
                continue
            problem = error.read().decode(errors="replace")
            raise RuntimeError(f"{error.code}: {problem}") from None
    raise RuntimeError("rate limited twice")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--user", required=True)
    parser.add_argument("--url", default=os.environ.get("ELICIT_URL", "http://127.0.0.1:8080"))
    parser.add_argument("candidates", help="JSON file with the candidates ('-' for stdin)")
    args = parser.parse_args()
    api_key = os.environ.get("ELICIT_API_KEY")
    if not api_key:
        print("set ELICIT_API_KEY to a scorer (or admin) key", file=sys.stderr)
        return 2
    with (sys.stdin if args.candidates == "-" else open(args.candidates)) as source:
        candidates = json.load(source)
    try:
        result = score(args.url, api_key, args.model, args.user, candidates)
    except (RuntimeError, urllib.error.URLError) as error:
        print(f"elicit: {error}", file=sys.stderr)
        return 1
    profile = result["profile"]
    source = "the user's own profile" if profile["source"] == "user" else "the population prior"
    print(f"{args.user} on {args.model}: scored with {source} ({profile['answers']} answers)")
    if "guard" in result:
        guard = result["guard"]
        print(f"guard: alpha {guard['alpha']:.2f}, {guard['divergence_bits']:.2f} bits from the population")
    print(f"{'rank':>4}  {'candidate':<24} {'mean':>8}  {'sd':>7}")
    for s in sorted(result["scores"], key=lambda s: s["rank"]):
        print(f"{s['rank']:>4}  {s['id']:<24} {s['mean']:>8.3f}  ±{s['sd']:>6.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
