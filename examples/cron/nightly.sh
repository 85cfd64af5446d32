#!/usr/bin/env bash
# Nightly photometry of a watchlist, for cron: import the targets onto a list,
# then bring every light curve up to date (`stdq update` asks each service only
# for the epochs after the newest one stored, so a nightly run fetches a night).
#
# usage: nightly.sh TARGETS_FILE [LIST]
#
# TARGETS_FILE: CSV with a header (`name` and/or `ra`,`dec`; a TNS search export
# works as it is), ECSV, or plain text with one name per line (names are
# resolved once and cached). Importing again each night is harmless: known
# targets stay as they are, new lines are added. A bad line is reported with
# its line number and skipped (the other targets are still updated).
# LIST: the target list (default: nightly).
#
# Environment:
#   STDQ            the stdq command (default: stdq)
#   STDQ_SERVICES   the services to ask, comma-separated (default: atlas)
#   (and the usual STDQ_CONFIG, STDQ_DATA_DIR, STDQ_ATLAS_API_KEY, ...)
#
# Each target and service keeps one light curve, growing night by night:
#   <data_dir>/products/<target>/<service>/latest.csv
# One line per target and service on stdout; exit codes (those of stdq update):
#   0   every job ended (new rows or none)
#   1   a job failed (the others done)
#   2   bad usage, or a targets file with nothing usable
#   3   configuration (settings, credentials)
#   75  a temporary failure (a service down, a queue full): run again later
set -u

STDQ=${STDQ:-stdq}
SERVICES=${STDQ_SERVICES:-atlas}

if [ $# -lt 1 ] || [ $# -gt 2 ]; then
    echo "usage: $0 TARGETS_FILE [LIST]" >&2
    exit 2
fi
targets_file=$1
list=${2:-nightly}
if [ ! -r "$targets_file" ]; then
    echo "error: cannot read $targets_file" >&2
    exit 2
fi

"$STDQ" targets import "$targets_file" --list "$list" --skip-bad
rc=$?
if [ "$rc" -ne 0 ]; then
    echo "error: stdq targets import exited $rc" >&2
    exit "$rc"
fi

"$STDQ" update --list "$list" --services "$SERVICES"
