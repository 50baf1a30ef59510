#!/bin/sh
# Azure App Service WebJob (triggered): the original system's home.
# settings.job runs it at 03:00 daily; its NCRONTAB has six fields (seconds
# first) and uses the App Service's time zone (WEBSITE_TIME_ZONE).
#
# Deploy: zip lethe (linux x86_64), lethe.toml, run.sh and settings.job into
# App_Data/jobs/triggered/lethe-sweep/. Put LETHE_AUDIT_KEY and the store
# credentials in the App Service's application settings (they arrive as
# environment variables), never in the zip.
#
# Exit codes are lethe's: 0 done, 1 failed, 2 bad config, 3 some items
# failed (each named in the log); the WebJob dashboard shows them.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
LETHE="${LETHE:-$here/lethe}"
CONFIG="${LETHE_CONFIG:-$here/lethe.toml}"
exec "$LETHE" --config "$CONFIG" --format json sweep
