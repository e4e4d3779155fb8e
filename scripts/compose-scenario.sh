#!/usr/bin/env bash
# The compose scenario (issue 8): bring the five-hospital committee up with docker compose, load
# devices at every hospital, run a query, stop one container (`docker compose stop`), run
# another, and check the invariants: the second query is released without the stopped
# hospital's data, budgets are charged exactly once per query and never overspent, every running
# member ends with the same ledger head, and the exported ledger verifies offline. Prints the
# committee's memory use. Leaves nothing behind (`down -v`) unless KEEP=1.
#
#   sh scripts/docker-image.sh && bash scripts/compose-scenario.sh
#
# MEDTECH_BITS (default 512 here: the scenario checks behaviour, not key strength).
set -euo pipefail
cd "$(dirname "$0")/.."
export MEDTECH_BITS="${MEDTECH_BITS:-512}"
P="medtech-scenario-$$"
if docker compose version >/dev/null 2>&1; then DC=(docker compose -p "$P" -f docker-compose.yml)
else DC=(docker-compose -p "$P" -f docker-compose.yml); fi
API=http://127.0.0.1:8080
fail() { echo "compose scenario: FAIL: $*" >&2; exit 1; }
cleanup() {
  if [ "${KEEP:-0}" != 1 ]; then "${DC[@]}" down -v --remove-orphans >/dev/null 2>&1 || true; fi
}
trap cleanup EXIT
json() { python3 -c "import sys, json; d = json.load(sys.stdin); print($1)"; }
# `m x METHOD PATH [args]`: the API of hospital-x, from inside its own container.
m() { local x=$1; shift; local method=$1 path=$2; shift 2
      "${DC[@]}" exec -T "hospital-$x" medtech http "$method" "http://127.0.0.1:8080$path" "$@"; }

healthy() { # waits for hospital-$1's health check
  local s
  for i in $(seq 1 120); do
    s=$(docker inspect -f '{{.State.Health.Status}}' "$("${DC[@]}" ps -q "hospital-$1")" 2>/dev/null || echo starting)
    [ "$s" = healthy ] && return 0
    sleep 1
  done
  "${DC[@]}" logs "hospital-$1" | tail -n 20; fail "hospital-$1 not healthy"
}
agree() { # the members in $1 (e.g. "a b c d") end on one ledger head
  local heads
  for i in $(seq 1 30); do
    heads=$(for x in $1; do m "$x" GET /api/v1/ledger/head --token "$A" | json 'd["root"] + "@" + str(d["size"])'; done | sort -u)
    [ "$(echo "$heads" | wc -l)" = 1 ] && { echo "members $1 agree on $heads"; return 0; }
    sleep 1
  done
  fail "members $1 disagree after 30 s: $(echo $heads)"
}

echo "== up (key size $MEDTECH_BITS)"
"${DC[@]}" up -d 2>&1 | tail -n 3
for x in a b c d e; do healthy "$x"; done
echo "all five members healthy"

echo "== accounts and devices"
declare -A ADMIN
for x in a b c d e; do
  pw=$(docker cp "$("${DC[@]}" ps -q "hospital-$x"):/data/admin-password" - | tar -xO)
  tok=$(m "$x" POST /api/v1/login --data "{\"username\":\"admin\",\"password\":\"$pw\"}" | json 'd["token"]')
  ADMIN[$x]=$tok
  op=$(m "$x" POST /api/v1/accounts --token "$tok" --data '{"username":"operator","role":"operator"}' | json 'd["password"]')
  optok=$(m "$x" POST /api/v1/login --data "{\"username\":\"operator\",\"password\":\"$op\"}" | json 'd["token"]')
  "${DC[@]}" exec -T "hospital-$x" medtech generate --hospital "hospital-$x" --devices 1000 --seed 7 --out /data/devices.csv 2>/dev/null
  n=$(m "$x" POST /api/v1/devices --token "$optok" --content-type text/csv --data @/data/devices.csv | json 'd["inserted"]')
  [ "$n" = 1000 ] || fail "hospital-$x stored $n of 1000 devices"
done
echo "1000 devices at each hospital"

A=${ADMIN[a]}
m a PUT /api/v1/budgets/dataset:federation --token "$A" --data '{"epsilon": 20}' >/dev/null
pw=$(m a POST /api/v1/researchers --token "$A" --data '{"username":"rita","epsilon_budget":2.5}' | json 'd["password"]')
R=$(curl -fsS -X POST $API/api/v1/login -H 'content-type: application/json' -d "{\"username\":\"rita\",\"password\":\"$pw\"}" | json 'd["token"]')

query() { # [token [body]]: prints the released query's JSON
  local id tok=${1:-$R} body=${2:-'{"kind":"count","epsilon":1.0}'}
  id=$(curl -fsS -X POST $API/api/v1/queries -H "authorization: Bearer $tok" -H 'content-type: application/json' \
       -d "$body" | json 'd["id"]')
  curl -fsS "$API/api/v1/queries/$id?wait=120" -H "authorization: Bearer $tok"
}


echo "== query with all five hospitals"
q1=$(query)
[ "$(echo "$q1" | json 'd["status"]')" = released ] || fail "first query: $q1"
c1=$(echo "$q1" | json 'len(d["result"]["contributors"])')
v1=$(echo "$q1" | json 'd["result"]["result"]["Count"]["value"]')
echo "released: $v1 devices (exact 5000) from $c1 hospitals"
[ "$c1" = 5 ] || fail "expected 5 contributors, got $c1"
python3 -c "import sys; sys.exit(0 if abs($v1 - 5000) < 60 else 1)" || fail "count $v1 far from 5000"

echo "== docker compose stop hospital-e"
"${DC[@]}" stop hospital-e >/dev/null
q2=$(query)
[ "$(echo "$q2" | json 'd["status"]')" = released ] || fail "second query: $q2"
contrib=$(echo "$q2" | json '",".join(d["result"]["contributors"])')
v2=$(echo "$q2" | json 'd["result"]["result"]["Count"]["value"]')
echo "released: $v2 devices (exact 4000) from $contrib"
[ "$contrib" = "hospital-a,hospital-b,hospital-c,hospital-d" ] || fail "contributors: $contrib"
python3 -c "import sys; sys.exit(0 if abs($v2 - 4000) < 60 else 1)" || fail "count $v2 far from 4000"

echo "== invariants"
# Budget: two queries of ε 1 charged exactly once each; a third of ε 1 would overspend 2.5.
spent=$(curl -fsS $API/api/v1/budget -H "authorization: Bearer $R" | json 'd["researcher"]["epsilon_spent"]')
[ "$spent" = 2.0 ] || fail "researcher spent $spent, expected 2.0"
code=$(curl -s -o /dev/null -w '%{http_code}' -X POST $API/api/v1/queries -H "authorization: Bearer $R" \
       -H 'content-type: application/json' -d '{"kind":"count","epsilon":1.0}')
[ "$code" = 403 ] || fail "over-budget query answered $code"
# Every running member ends with the same ledger head (they keep appending cosignatures, so
# read until one round of reads agrees).
agree "a b c d"
# The export verifies offline, and no result was released without t valid partials.
curl -fsS $API/api/v1/ledger/export -H "authorization: Bearer $A" > "/tmp/$P-export.json"
target/release/medtech ledger verify "/tmp/$P-export.json" >/dev/null || fail "export does not verify"
echo "export verified offline: $(json 'len(d["entries"])' < "/tmp/$P-export.json") entries"
for q in "$q1" "$q2"; do
  n=$(echo "$q" | json 'len(d["result"]["decrypted_by"])')
  [ "$n" -ge 3 ] || fail "released with $n partial decryptions"
done
rm -f "/tmp/$P-export.json"

echo "== memory, idle (four members)"
docker stats --no-stream --format '{{.Name}} {{.MemUsage}}' $("${DC[@]}" ps -q) | sed 's/^/  /'

echo "== docker compose start hospital-e: it restarts from its volume and catches up"
"${DC[@]}" start hospital-e >/dev/null
healthy e
agree "a b c d e"

echo "== load: 4 researchers, 4 queries each, concurrently"
m a PUT /api/v1/budgets/dataset:federation --token "$A" --data '{"epsilon": 100}' >/dev/null
declare -a RT
for r in 1 2 3 4; do
  pw=$(m a POST /api/v1/researchers --token "$A" --data "{\"username\":\"load$r\",\"epsilon_budget\":10}" | json 'd["password"]')
  RT[$r]=$(curl -fsS -X POST $API/api/v1/login -H 'content-type: application/json' -d "{\"username\":\"load$r\",\"password\":\"$pw\"}" | json 'd["token"]')
done
stats="/tmp/$P-stats.txt"; : > "$stats"
( while :; do docker stats --no-stream --format '{{.Name}} {{.MemUsage}}' $("${DC[@]}" ps -q) >> "$stats" 2>/dev/null; done ) &
sampler=$!
t0=$(date +%s.%N)
pids=()
for r in 1 2 3 4; do
  ( for k in 1 2 3 4; do
      case $(( (r + k) % 3 )) in
        0) body='{"kind":"count","epsilon":0.5}' ;;
        1) body='{"kind":"grouped_count","target":"category","epsilon":0.5}' ;;
        *) body='{"kind":"average","target":"battery_level","epsilon":0.5}' ;;
      esac
      out=$(query "${RT[$r]}" "$body")
      [ "$(echo "$out" | json 'd["status"]')" = released ] || { echo "load$r: $out" >&2; exit 1; }
    done ) &
  pids+=($!)
done
for p in "${pids[@]}"; do wait "$p" || { kill "$sampler"; fail "a query under load was not released"; }; done
t1=$(date +%s.%N)
kill "$sampler" 2>/dev/null || true; wait "$sampler" 2>/dev/null || true
echo "16 queries released in $(python3 -c "print(f'{$t1 - $t0:.1f}')") s"
python3 - "$stats" <<'PY'
import re, sys
peak = {}
units = {"B": 1 / 2**20, "KiB": 1 / 1024, "MiB": 1, "GiB": 1024}
for line in open(sys.argv[1]):
    m = re.match(r"(\S+) ([0-9.]+)([KMG]?i?B) /", line)
    if m:
        v = float(m.group(2)) * units[m.group(3)]
        peak[m.group(1)] = max(peak.get(m.group(1), 0), v)
for k in sorted(peak):
    print(f"  {k} peak {peak[k]:.0f} MiB")
print(f"committee peak under load (sum of per-member peaks): {sum(peak.values()):.0f} MiB")
PY
rm -f "$stats"
agree "a b c d e"
echo "compose scenario: PASS"
