"""The ATLAS API guide's example loop, re-stated in our own words (bench/peers.py's peer).

What the guide's client does (docs/wire-formats.md section 1.6): POST the task with the
token; on 429 wait as the message says and send again; GET the task every 4 s while it
is queued and every 2 s while it runs; when ``finishtimestamp`` is set, stop on
``error_msg``, else GET ``result_url``; DELETE the task; read the result with pandas
(whitespace-separated, ``###MJD`` renamed ``MJD``) and save it.

    python bench/atlas_example_client.py URL TOKEN RA DEC OUT.csv [--mjd-min 57000]
"""

from __future__ import annotations

import argparse
import io
import re
import sys
import time

QUEUED_WAIT = 4.0
RUNNING_WAIT = 2.0


def fetch(base: str, token: str, ra: float, dec: float, mjd_min: float | None) -> str | None:
    """The result file's text of one forced-photometry task (None: the server's error)."""
    import requests

    session = requests.Session()
    session.headers.update({"Authorization": f"Token {token}", "Accept": "application/json"})
    form = {"ra": ra, "dec": dec, "send_email": False}
    if mjd_min is not None:
        form["mjd_min"] = mjd_min
    while True:
        answer = session.post(f"{base}/queue/", data=form)
        if answer.status_code == 201:
            task_url = answer.json()["url"]
            break
        if answer.status_code == 429:
            said = re.search(r"available in (\d+) seconds?", answer.json().get("detail", ""))
            time.sleep(int(said.group(1)) if said else 10)
            continue
        answer.raise_for_status()
        raise SystemExit(f"unexpected HTTP {answer.status_code}: {answer.text[:200]}")
    while True:
        task = session.get(task_url).json()
        if task.get("finishtimestamp"):
            break
        time.sleep(RUNNING_WAIT if task.get("starttimestamp") else QUEUED_WAIT)
    text = None
    if not task.get("error_msg"):
        result = session.get(task["result_url"])
        result.raise_for_status()
        text = result.text
    session.delete(task_url)
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url")
    parser.add_argument("token")
    parser.add_argument("ra", type=float)
    parser.add_argument("dec", type=float)
    parser.add_argument("out")
    parser.add_argument("--mjd-min", type=float, default=57000.0)
    args = parser.parse_args(argv)
    text = fetch(args.url.rstrip("/"), args.token, args.ra, args.dec, args.mjd_min)
    if text is None:
        print("the task ended with an error", file=sys.stderr)
        return 1
    import pandas as pd

    table = pd.read_csv(io.StringIO(text), sep=r"\s+").rename(columns={"###MJD": "MJD"})
    table.to_csv(args.out, index=False)
    print(f"{len(table)} rows -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
