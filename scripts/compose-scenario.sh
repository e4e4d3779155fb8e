#!/usr/bin/env bash
# The compose scenario (issue 8): bring the five-hospital committee up with docker compose, load
# devices at every hospital, run a query, stop one container (`docker compose stop`), run
# another, and check the invariants: the second query is released without the stopped
# hospital's data, budgets are charged exactly once per query and never overspent, every running
# member ends with the same ledger head, and the exported ledger verifies offline. Then: the
# stopped member restarts from its volume and catches up; two members are cut off the network
# (`docker network disconnect`): the majority releases without them, the minority cannot
# commit, and after healing it catches up; the Raft leader is killed with SIGKILL while a query
# is open: the query is released, a new leader is elected, the budget is charged once.
# A committee change goes through the CLI (`medtech committee propose`, `approve` inside three
# members' containers, `submit`). Last, a load phase. Prints the committee's memory use.
# Leaves nothing behind (`down -v`) unless KEEP=1.
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

signin() { # `signin x user password`: a token for user at hospital-x; a generated password
  # (must_change_password) is changed first, as nothing else is allowed until it is
  local r tok
  r=$(m "$1" POST /api/v1/login --data "{\"username\":\"$2\",\"password\":\"$3\"}")
  tok=$(echo "$r" | json 'd["token"]')
  if [ "$(echo "$r" | json 'd["must_change_password"]')" = True ]; then
    tok=$(m "$1" POST /api/v1/password --token "$tok" \
      --data "{\"old_password\":\"$3\",\"new_password\":\"$3-own\"}" | json 'd["token"]')
  fi
  echo "$tok"
}

healthy() { # waits for hospital-$1's health check
  local s
  for i in $(seq 1 120); do
    s=$(docker inspect -f '{{.State.Health.Status}}' "$("${DC[@]}" ps -q "hospital-$1")" 2>/dev/null || echo starting)
    [ "$s" = healthy ] && return 0
    sleep 1
  done
  "${DC[@]}" logs "hospital-$1" | tail -n 20; fail "hospital-$1 not healthy"
}
# What loosens a privacy limit (a researcher's registration, a budget raised) is pending until
# t = 3 members post it (issue 24 s3): hospital-a proposed it; the other members that are up
# approve what hospital-a lists as pending until nothing is left.
approve_all() {
  local ids id x
  for i in $(seq 1 30); do
    ids=$(m a GET /api/v1/changes/pending --token "$A" | json '" ".join(p["id"] for p in d["pending"])')
    [ -z "$ids" ] && return 0
    for x in b c d e; do
      for id in $ids; do
        m "$x" POST "/api/v1/changes/$id/approve" --token "${ADMIN[$x]}" >/dev/null 2>&1 || true
      done
      ids=$(m a GET /api/v1/changes/pending --token "$A" | json '" ".join(p["id"] for p in d["pending"])')
      [ -z "$ids" ] && return 0
    done
    sleep 1
  done
  fail "changes still pending after 30 s: $ids"
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
  tok=$(signin "$x" admin "$pw")
  ADMIN[$x]=$tok
  op=$(m "$x" POST /api/v1/accounts --token "$tok" --data '{"username":"operator","role":"operator"}' | json 'd["password"]')
  optok=$(signin "$x" operator "$op")
  "${DC[@]}" exec -T "hospital-$x" medtech generate --hospital "hospital-$x" --devices 1000 --seed 7 --out /data/devices.csv 2>/dev/null
  n=$(m "$x" POST /api/v1/devices --token "$optok" --content-type text/csv --data @/data/devices.csv | json 'd["inserted"]')
  [ "$n" = 1000 ] || fail "hospital-$x stored $n of 1000 devices"
done
echo "1000 devices at each hospital"

A=${ADMIN[a]}
m a PUT /api/v1/budgets/dataset:federation --token "$A" --data '{"epsilon": 20}' >/dev/null
pw=$(m a POST /api/v1/researchers --token "$A" --data '{"username":"rita","epsilon_budget":2.5}' | json 'd["password"]')
approve_all
R=$(signin a rita "$pw")

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

# A second researcher for the partition and leader-kill phases: every query ε 0.5.
pw=$(m a POST /api/v1/researchers --token "$A" --data '{"username":"pat","epsilon_budget":5}' | json 'd["password"]')
approve_all
PT=$(signin a pat "$pw")
HALF='{"kind":"count","epsilon":0.5}'
pat_spent() { m "$1" GET /api/v1/budget --token "$PT" | json 'd["researcher"]["epsilon_spent"]'; }
size_of() { m "$1" GET /api/v1/ledger/head --token "$A" | json 'd["size"]'; }
# `mq x`: pat's Count submitted through hospital-x and waited for there; prints the query.
mq() { local id
       id=$(m "$1" POST /api/v1/queries --token "$PT" --data "$HALF" | json 'd["id"]')
       m "$1" GET "/api/v1/queries/$id?wait=120" --token "$PT"; }
released_from() { # QUERY N: released, from N hospitals, with a count near 1000 per hospital
  local q=$1 n=$2 st c v
  st=$(echo "$q" | json 'd["status"]')
  [ "$st" = released ] || fail "query not released: $q"
  c=$(echo "$q" | json 'len(d["result"]["contributors"])')
  v=$(echo "$q" | json 'd["result"]["result"]["Count"]["value"]')
  [ "$c" = "$n" ] || fail "expected $n contributors, got $c: $q"
  python3 -c "import sys; sys.exit(0 if abs($v - 1000 * $n) < 120 else 1)" || fail "count $v far from $((1000 * n))"
  echo "released: $v devices (exact $((1000 * n))) from $(echo "$q" | json '",".join(d["result"]["contributors"])')"
}

leader() { # the Raft leader's letter, as hospital-$1 sees it (waits for one to be known)
  local l
  for i in $(seq 1 30); do
    l=$(m "$1" GET /api/v1/committee --token "$A" |
        json "next((x['name'][len('hospital-'):] for x in d['members'] if x['raft_id'] == d['leader']), '')")
    [ -n "$l" ] && { echo "$l"; return 0; }
    sleep 1
  done
  fail "hospital-$1 knows no leader after 30 s"
}

# The minority: two followers other than hospital-a (whose API the researcher uses). A leader
# in the minority would keep an uncommitted proposal; followers refuse at once.
others() { # the letters of e d c b except those given, in that order
  local x out=()
  for x in e d c b; do [[ " $* " == *" $x "* ]] || out+=("$x"); done
  echo "${out[@]}"
}
L=$(leader a)
read -r M1 M2 _ <<< "$(others "$L")"
echo "== partition: hospital-$M1 and hospital-$M2 cut off the committee network (still running; leader hospital-$L)"
NET="${P}_committee"
for x in "$M1" "$M2"; do docker network disconnect "$NET" "$("${DC[@]}" ps -q "hospital-$x")"; done
released_from "$(mq a)" 3
# The minority cannot commit: a submission through it is refused and charges nothing; its log
# stays behind the majority's.
if timeout 60 "${DC[@]}" exec -T "hospital-$M1" medtech http POST http://127.0.0.1:8080/api/v1/queries \
     --token "$PT" --data "$HALF" >/dev/null 2>&1; then
  fail "a query submitted through the partitioned minority was accepted"
fi
echo "a submission through the minority was refused"
behind=$(size_of "$M1"); ahead=$(size_of a)
[ "$behind" -lt "$ahead" ] || fail "the minority kept up ($behind vs $ahead entries)"
echo "minority log $behind entries, majority $ahead"
echo "== heal: reconnected, the minority catches up"
for x in "$M1" "$M2"; do docker network connect --alias "hospital-$x" "$NET" "$("${DC[@]}" ps -q "hospital-$x")"; done
healthy "$M1"; healthy "$M2"
agree "a b c d e"
[ "$(pat_spent "$M1")" = 0.5 ] || fail "after the partition pat spent $(pat_spent "$M1"), expected 0.5"
released_from "$(mq "$M1")" 5

echo "== the Raft leader killed (SIGKILL) mid-query"
# A third member is paused (`docker pause`, its processes frozen) so that the query waits for
# the contribution timeout: the leader dies while it is open, and the query is closed,
# decrypted and released under the new leader by the three members left (still a quorum and t).
L=$(leader a)
Y=a; [ "$L" = a ] && Y=b
read -r X _ <<< "$(others "$L" "$Y")"
echo "leader: hospital-$L; the query goes through hospital-$Y; hospital-$X paused"
"${DC[@]}" pause "hospital-$X" >/dev/null
id=$(m "$Y" POST /api/v1/queries --token "$PT" --data "$HALF" | json 'd["id"]')
docker kill -s KILL "$("${DC[@]}" ps -q "hospital-$L")" >/dev/null
st=$(m "$Y" GET "/api/v1/queries/$id" --token "$PT" | json 'd["status"]')
echo "just after the kill the query was $st"
[ "$st" != released ] || fail "the query was released before the leader was killed"
q=$(m "$Y" GET "/api/v1/queries/$id?wait=120" --token "$PT")
[ "$(echo "$q" | json 'd["status"]')" = released ] || fail "query under a killed leader: $q"
echo "released from $(echo "$q" | json '",".join(d["result"]["contributors"])'), decrypted by $(echo "$q" | json '",".join(d["result"]["decrypted_by"])')"
c=$(echo "$q" | json 'len(d["result"]["contributors"])')
[ "$c" -ge 3 ] || fail "only $c hospitals contributed with three members up"
echo "$q" | json 'd["result"]["contributors"]' | grep -q "hospital-$X" && fail "the paused hospital-$X contributed"
for i in $(seq 1 30); do nl=$(leader "$Y"); [ "$nl" != "$L" ] && break; sleep 1; done
[ "$nl" != "$L" ] || fail "hospital-$Y still follows the killed hospital-$L after 30 s"
echo "new leader: hospital-$nl"
"${DC[@]}" unpause "hospital-$X" >/dev/null
"${DC[@]}" start "hospital-$L" >/dev/null
healthy "$X"; healthy "$L"
agree "a b c d e"
for x in a b c d e; do
  [ "$(pat_spent "$x")" = 1.5 ] || fail "hospital-$x says pat spent $(pat_spent "$x"), expected 1.5 (three queries)"
done
echo "pat charged exactly three queries (ε 1.5) on every member"

echo "== a committee change through the CLI: proposed, approved by t members at their sites, submitted"
# The edit keeps the committee as it is (threshold 3) so the rest runs unchanged; the ledger
# still requires t valid approvals for the next epoch. Each approval is made inside that
# member's container with its own signing key.
CH="/tmp/$P-change.json"
target/release/medtech committee propose --url $API --token "$A" --edit threshold=3 --out "$CH" | sed 's/^/  /'
if target/release/medtech committee submit "$CH" --url $API --token "$A" >/dev/null 2>&1; then
  fail "a change without approvals was accepted"
fi
for x in b c d; do
  cid=$("${DC[@]}" ps -q "hospital-$x")
  docker cp "$CH" "$cid:/tmp/change.json"
  "${DC[@]}" exec -T -u 0 "hospital-$x" medtech committee approve /tmp/change.json \
    --member "hospital-$x" --signing-key "/committee/hospital-$x/keys/node.key" | tail -n 1 | sed 's/^/  /'
  docker cp "$cid:/tmp/change.json" - | tar -xO > "$CH"
done
target/release/medtech committee submit "$CH" --url $API --token "$A" | sed 's/^/  /'
rm -f "$CH"
for i in $(seq 1 30); do
  epochs=$(for x in a b c d e; do m "$x" GET /api/v1/committee --token "$A" | json 'd["epoch"]'; done | sort -u)
  [ "$epochs" = 1 ] && break
  sleep 1
done
[ "$epochs" = 1 ] || fail "members are at epochs $(echo $epochs) after the change"
echo "every member applied the change: committee epoch 1"

echo "== load: 4 researchers, 4 queries each, concurrently"
m a PUT /api/v1/budgets/dataset:federation --token "$A" --data '{"epsilon": 100}' >/dev/null
declare -a RT
declare -a PW
for r in 1 2 3 4; do
  PW[$r]=$(m a POST /api/v1/researchers --token "$A" --data "{\"username\":\"load$r\",\"epsilon_budget\":10}" | json 'd["password"]')
done
approve_all # a researcher's token is accepted once the registration applied
for r in 1 2 3 4; do RT[$r]=$(signin a "load$r" "${PW[$r]}"); done
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
# One `docker stats` sample takes about 2 s, and the load can end sooner: keep the sampler
# until a sample is in (at most 10 s more), so the figure below is never an empty one.
for _ in $(seq 1 50); do [ -s "$stats" ] && break; sleep 0.2; done
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
if peak:
    print(f"committee peak under load (sum of per-member peaks): {sum(peak.values()):.0f} MiB")
else:
    print("committee peak under load: no docker stats sample came in")
PY
rm -f "$stats"
agree "a b c d e"
echo "compose scenario: PASS"
