#!/usr/bin/env bash
# A compliance gate run the way a CI/CD pipeline runs it, against a scenario: a server holding a model version's
# lineage, evaluation with per-group figures, a second person's approval and some traffic; its documents
# generated and the declaration of conformity signed; then `cairn gate check` must pass (exit 0) and a stricter
# policy must fail (exit 1). The signatory key in .ci/gate is a test key, not a secret.
set -euo pipefail
cd "$(dirname "$0")/.."
work=$(mktemp -d)
pid=
cleanup() { [ -n "$pid" ] && kill -INT "$pid" 2>/dev/null && wait "$pid" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT
go build -o "$work/cairn" ./cmd/cairn
cairn() { "$work/cairn" "$@"; }
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"$work/cairn" serve --data "$work/data" --listen "127.0.0.1:$port" --origin ci.example/cairn >"$work/serve.log" 2>&1 &
pid=$!
export CAIRN_URL="http://127.0.0.1:$port" CAIRN_TOKEN_FILE="$work/data/admin.token"
for _ in $(seq 200); do curl -sf "$CAIRN_URL/healthz" >/dev/null && break; sleep 0.05; done
cairn system apply -f .ci/gate/credit.yaml >/dev/null
for who in alice bob; do
  cairn token create --data "$work/data" --principal "$who" --role ingest --system credit-scoring >"$work/$who.token"
done
uuid7() { python3 -c 'import os, time; b = bytearray((int(time.time()*1000)).to_bytes(6, "big") + os.urandom(10)); b[6] = b[6] & 15 | 0x70; b[8] = b[8] & 63 | 0x80; h = b.hex(); print(f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}")'; }
post() { curl -sf -H "Authorization: Bearer $(cat "$1")" --data-binary @- "$CAIRN_URL/v1/systems/credit-scoring/events" >/dev/null; }
DS=$(uuid7) RUN=$(uuid7) EVAL=$(uuid7) OK=$(uuid7)
post "$work/alice.token" <<JSON
[{"id":"$DS","type":"dataset.version","attrs":{"name":"applications","version":"2026-11","digest":"sha256:$(printf 'a%.0s' $(seq 64))","rows":120000}},
 {"id":"$RUN","type":"training.run","refs":["$DS"],"attrs":{"run_id":"r-1","status":"finished"}},
 {"type":"model.version","model":{"name":"credit","version":"1","digest":"sha256:$(printf 'b%.0s' $(seq 64))"},"refs":["$RUN"],"attrs":{"run_id":"r-1","format":"sklearn"}},
 {"id":"$EVAL","type":"evaluation","model":{"name":"credit","version":"1"},"attrs":{"metrics":{"auc":0.81},"thresholds":{"auc":0.75},"passed":true,
  "group_metrics":{"sex=f":{"n":400,"selection_rate":0.31,"tpr":0.71},"sex=m":{"n":500,"selection_rate":0.33,"tpr":0.73},
   "age=18-24":{"n":9,"selection_rate":0.1},"age=25-64":{"n":700,"selection_rate":0.33,"tpr":0.72},"age=65+":{"n":191,"selection_rate":0.3,"tpr":0.7}}}}]
JSON
post "$work/bob.token" <<JSON
[{"id":"$OK","type":"approval","model":{"name":"credit","version":"1"},"refs":["$EVAL"],"attrs":{"decision":"approve"}}]
JSON
post "$CAIRN_TOKEN_FILE" <<JSON
[{"type":"deployment","model":{"name":"credit","version":"1"},"deployment":"prod","refs":["$OK"],"attrs":{"action":"deployed"}},
 {"type":"inference","model":{"name":"credit","version":"1"},"deployment":"prod","attrs":{"latency_ms":21},"payload":{"subject":"applicant-1","input":{"name":"Jane Roe","iban":"CH93 0076 2011 6238 5295 7","income":52000},"output":{"score":712}}}]
JSON
for kind in model-card evaluation-report technical-documentation declaration-of-conformity; do
  cairn docs generate "$kind" --system credit-scoring --model-version credit@1 -o "$work/$kind.md" 2>/dev/null
done
cairn docs sign --system credit-scoring --file "$work/declaration-of-conformity.md" --key .ci/gate/signatory.pem
cairn gate check --system credit-scoring --model-version credit@1 --policy .ci/gate/policy.yaml --junit "$work/junit.xml"
grep -q 'failures="0"' "$work/junit.xml"
set +e
cairn gate check --system credit-scoring --model-version credit@1 --policy .ci/gate/strict.yaml >"$work/strict.txt"
status=$?
set -e
cat "$work/strict.txt"
if [ "$status" != 1 ]; then
  echo "the strict gate exited $status, want 1"
  exit 1
fi
echo "gate check: passes on the scenario, fails (exit 1) on the strict policy"
