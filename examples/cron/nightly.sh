#!/usr/bin/env bash
# Submit the night's photometry queries for a list of targets, wait for them,
# and collect every table; report failures through the exit code (for cron).
#
# usage: nightly.sh TARGETS_FILE OUT_DIR [-- EXTRA QUERY OPTIONS...]
#
# TARGETS_FILE: one target per line, either a name ("SN 2023ixf"), resolved by
# stdq, or "label | RA | Dec" in degrees. Blank lines and lines starting with #
# are skipped.
#
# Environment:
#   STDQ            the stdq command (default: stdq)
#   STDQ_SERVICE    the service to query (default: atlas)
#   LOOKBACK_DAYS   query the last N days: --mjd-min is today's MJD - N, a whole
#                   number, so a second run on the same day finds the same jobs
#                   (default: 30; empty: no --mjd-min)
#   WAIT_TIMEOUT    seconds to wait for the jobs (default: 36000)
#   (and the usual STDQ_CONFIG, STDQ_DATA_DIR, STDQ_ATLAS_API_KEY, ...)
#
# Writes OUT_DIR/<label>.csv for each target with data, prints one line per
# target, and exits with:
#   0   every target done (with data, or no data: the service has none)
#   1   a query or job failed (bad target, refused credentials, ...)
#   2   bad usage
#   75  the jobs did not finish within WAIT_TIMEOUT (they go on: run again later)
set -u

STDQ=${STDQ:-stdq}
SERVICE=${STDQ_SERVICE:-atlas}
LOOKBACK_DAYS=${LOOKBACK_DAYS-30}
WAIT_TIMEOUT=${WAIT_TIMEOUT:-36000}

if [ $# -lt 2 ]; then
    echo "usage: $0 TARGETS_FILE OUT_DIR [-- EXTRA QUERY OPTIONS...]" >&2
    exit 2
fi
targets_file=$1
out_dir=$2
shift 2
[ "${1-}" = "--" ] && shift
extra=("$@")
if [ ! -r "$targets_file" ]; then
    echo "error: cannot read $targets_file" >&2
    exit 2
fi
mkdir -p "$out_dir" || exit 2

window=()
if [ -n "$LOOKBACK_DAYS" ]; then
    # MJD = Unix time / 86400 + 40587, rounded down to the day
    mjd_min=$(awk -v t="$(date +%s)" -v d="$LOOKBACK_DAYS" 'BEGIN { printf "%d", int(t / 86400) + 40587 - d }')
    window=(--mjd-min "$mjd_min")
fi

trim() { local s=$1; s=${s#"${s%%[![:space:]]*}"}; s=${s%"${s##*[![:space:]]}"}; printf '%s' "$s"; }
safe() { printf '%s' "$1" | tr -c 'A-Za-z0-9._+-' '_'; }

labels=()
ids=()
failed=0
while IFS= read -r line || [ -n "$line" ]; do
    line=$(trim "$line")
    case "$line" in ''|'#'*) continue ;; esac
    if [[ "$line" == *"|"* ]]; then
        IFS='|' read -r label ra dec <<<"$line"
        label=$(trim "$label"); ra=$(trim "$ra"); dec=$(trim "$dec")
        where=("$label" --ra "$ra" --dec "$dec")
    else
        label=$line
        where=("$label")
    fi
    # ${a[@]+"${a[@]}"}: an empty array expands to nothing, even under set -u in old bash
    if id=$("$STDQ" query "$SERVICE" "${where[@]}" ${window[@]+"${window[@]}"} ${extra[@]+"${extra[@]}"} --background); then
        labels+=("$label")
        ids+=("$id")
    else
        rc=$?
        echo "FAILED  $label: not submitted (exit $rc)"
        failed=1
    fi
done <"$targets_file"

if [ ${#ids[@]} -eq 0 ]; then
    echo "nothing submitted"
    exit $(( failed ? 1 : 0 ))
fi

# exit 0: all succeeded; 1: some failed or were cancelled; 75: timeout
"$STDQ" jobs wait "${ids[@]}" --timeout "$WAIT_TIMEOUT" 2>/dev/null
wait_rc=$?

timed_out=0
for i in "${!ids[@]}"; do
    id=${ids[$i]}
    label=${labels[$i]}
    out="$out_dir/$(safe "$label").csv"
    "$STDQ" jobs result "$id" -o "$out" >/dev/null 2>"$out_dir/.stderr.$$"
    rc=$?
    why=$(tail -n 2 "$out_dir/.stderr.$$" | head -n 1)
    case $rc in
        0)  echo "OK      $label: job $id -> $out" ;;
        5)  echo "NODATA  $label: job $id: no data" ;;
        75) echo "WAITING $label: job $id has not finished (stdq jobs wait $id)"; timed_out=1 ;;
        *)  echo "FAILED  $label: job $id (exit $rc): $why"; failed=1 ;;
    esac
done
rm -f "$out_dir/.stderr.$$"

if [ "$failed" -ne 0 ]; then exit 1; fi
if [ "$timed_out" -ne 0 ] || [ "$wait_rc" -eq 75 ]; then exit 75; fi
exit 0
