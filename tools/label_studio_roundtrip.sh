#!/usr/bin/env bash
# One selection through a real Label Studio and back: its own virtual environment, a local server on
# a free port serving the images from disk, a project made from the written configuration, the
# selection's tasks imported, annotated through the API as people do it on the labelling page,
# exported as JSON, JSON-MIN and CSV, and the server stopped.
#
#   bash tools/label_studio_roundtrip.sh DATASET_FOLDER TASKS CONFIG OUT [TRUTH_CSV]
#
# DATASET_FOLDER  the folder of the dataset file (its parent is the document root of local files)
# TASKS, CONFIG   al_select.py's iter<I>_label_studio.json and the run folder's label_studio.xml
# OUT             where the exports go: clean.{json,min.json,csv} (every task labelled once) and
#                 messy.{json,min.json,csv} (a skip, a skip then a label, two people disagreeing,
#                 two agreeing, a task left alone)
# TRUTH_CSV       path,label of the true classes the annotators answer with (else the tasks' majority)
#
# LS_VENV (default /tmp/label-studio-venv) is made if missing; LS_VERSION pins label-studio (1.23.0).
set -euo pipefail
[ $# -ge 4 ] || { sed -n 7,17p "$0"; exit 2; }
DATASET_FOLDER=$(cd "$1" && pwd); TASKS=$(realpath "$2"); CONFIG=$(realpath "$3"); OUT=$4; TRUTH=${5:-}
[ -z "$TRUTH" ] || TRUTH=$(realpath "$TRUTH")
HERE=$(cd "$(dirname "$0")" && pwd)
LS_VENV=${LS_VENV:-/tmp/label-studio-venv}
LS_VERSION=${LS_VERSION:-1.23.0}
mkdir -p "$OUT"; OUT=$(cd "$OUT" && pwd)

if [ ! -x "$LS_VENV/bin/label-studio" ]; then
    python3 -m venv "$LS_VENV"
    "$LS_VENV/bin/pip" install --quiet "label-studio==$LS_VERSION" label-studio-sdk
fi
"$LS_VENV/bin/pip" list 2>/dev/null | grep -i '^label-studio'

DATA_DIR=$(mktemp -d /tmp/label-studio-data.XXXXXX)
PORT=$("$LS_VENV/bin/python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
# Local files under the dataset's parent folder; no update check, analytics or error reports sent out.
export LABEL_STUDIO_BASE_DATA_DIR=$DATA_DIR LOCAL_FILES_SERVING_ENABLED=true \
    LOCAL_FILES_DOCUMENT_ROOT=$(dirname "$DATASET_FOLDER") LATEST_VERSION_CHECK=false COLLECT_ANALYTICS=false \
    SENTRY_DSN= FRONTEND_SENTRY_DSN= DJANGO_DB=sqlite
ADMIN_TOKEN=$(openssl rand -hex 20); SECOND_TOKEN=$(openssl rand -hex 20)
# Two people: the project's owner and a second annotator, each with a legacy API token.
"$LS_VENV/bin/label-studio" init --quiet --no-browser --enable-legacy-api-token --username owner@example.com \
    --password "owner-$ADMIN_TOKEN" --user-token "$ADMIN_TOKEN" > "$DATA_DIR/init1.log" 2>&1
"$LS_VENV/bin/label-studio" init --quiet --no-browser --enable-legacy-api-token --username second@example.com \
    --password "second-$SECOND_TOKEN" --user-token "$SECOND_TOKEN" > "$DATA_DIR/init2.log" 2>&1
"$LS_VENV/bin/label-studio" start --no-browser --internal-host 127.0.0.1 --port "$PORT" > "$DATA_DIR/server.log" 2>&1 &
SERVER=$!
trap 'kill $SERVER 2>/dev/null; wait $SERVER 2>/dev/null; rm -rf "$DATA_DIR"' EXIT
echo "label studio: pid $SERVER on port $PORT, data in $DATA_DIR, document root $LOCAL_FILES_DOCUMENT_ROOT"
for _ in $(seq 180); do
    curl -fs "http://127.0.0.1:$PORT/health" > /dev/null && break
    kill -0 $SERVER 2>/dev/null || { tail -30 "$DATA_DIR/server.log"; exit 1; }
    sleep 1
done
curl -fs "http://127.0.0.1:$PORT/health" > /dev/null || { tail -30 "$DATA_DIR/server.log"; exit 1; }

"$LS_VENV/bin/python" "$HERE/label_studio_roundtrip.py" --url "http://127.0.0.1:$PORT" --token "$ADMIN_TOKEN" \
    --second_token "$SECOND_TOKEN" --storage "$DATASET_FOLDER" --tasks "$TASKS" --config "$CONFIG" --out "$OUT" \
    ${TRUTH:+--truth "$TRUTH"}
kill $SERVER; wait $SERVER 2>/dev/null || true
trap 'rm -rf "$DATA_DIR"' EXIT
echo "server stopped; exports in $OUT:"
ls -l "$OUT"
