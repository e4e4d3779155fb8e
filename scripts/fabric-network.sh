#!/usr/bin/env bash
# A real Hyperledger Fabric network on loopback for the anchoring connector's tests: one etcdraft
# orderer (channel participation API, no system channel) and one peer of Org1MSP with the Gateway,
# the channel `medtech` created and joined. Uses the Fabric 3.1.5 binaries in ../shared/fabric
# (never downloaded); everything it writes lives in DIR, and `down` stops what `up` started.
#
#   scripts/fabric-network.sh up   DIR [BASE_PORT]   # orderer BASE, admin BASE+3, peer BASE+1,
#                                                    # chaincode BASE+2, operations BASE+4/+5,
#                                                    # anchoring chaincode service BASE+6
#   scripts/fabric-network.sh down DIR
#
# With ANCHOR_CHAINCODE_BIN set to a built `medtech-anchor-chaincode`, `up` also deploys the
# anchoring chaincode as a service (the peer's ccaas builder; name medtech-anchor, Org1's admins
# may register committees) and starts it.
#
# After `up`, DIR/network.env names the peer's address, its TLS CA and a client identity
# (Org1's User1): FABRIC_PEER, FABRIC_TLS_CA, FABRIC_MSP_ID, FABRIC_USER_CERT, FABRIC_USER_KEY,
# FABRIC_CHANNEL. Logs: DIR/orderer.log, DIR/peer.log. FABRIC_DIR overrides where the binaries
# are (default: the first ancestor of this checkout holding shared/fabric/bin/peer).
set -euo pipefail

cmd=${1:-}
dir=${2:-}
[ -n "$cmd" ] && [ -n "$dir" ] || { echo "usage: $0 up|down DIR [BASE_PORT]" >&2; exit 2; }

stop() {
  for p in chaincode peer orderer; do
    if [ -f "$dir/$p.pid" ]; then
      pid=$(cat "$dir/$p.pid")
      kill "$pid" 2>/dev/null || true
      for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -9 "$pid" 2>/dev/null || true
      rm -f "$dir/$p.pid"
    fi
  done
}

if [ "$cmd" = down ]; then
  stop
  exit 0
fi
[ "$cmd" = up ] || { echo "unknown command $cmd (up or down)" >&2; exit 2; }

if [ -z "${FABRIC_DIR:-}" ]; then
  d=$(cd "$(dirname "$0")/.." && pwd)
  while [ "$d" != / ] && [ ! -x "$d/shared/fabric/bin/peer" ]; do d=$(dirname "$d"); done
  FABRIC_DIR=$d/shared/fabric
fi
bin=$FABRIC_DIR/bin
[ -x "$bin/peer" ] || { echo "no Fabric binaries at $bin (set FABRIC_DIR)" >&2; exit 3; }

base=${3:-17050}
orderer_port=$base
peer_port=$((base + 1))
cc_port=$((base + 2))
admin_port=$((base + 3))
ops_o=$((base + 4))
ops_p=$((base + 5))
anchor_port=$((base + 6))
channel=medtech

mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
trap 'status=$?; if [ $status -ne 0 ]; then stop; echo "fabric-network: up failed (logs in $dir)" >&2; fi' EXIT

cat > "$dir/crypto-config.yaml" <<EOF
OrdererOrgs:
  - Name: Orderer
    Domain: example.com
    EnableNodeOUs: true
    Specs:
      - Hostname: orderer
        SANS: [localhost, 127.0.0.1]
PeerOrgs:
  - Name: Org1
    Domain: org1.example.com
    EnableNodeOUs: true
    Template:
      Count: 1
      SANS: [localhost, 127.0.0.1]
    Users:
      Count: 1
EOF
rm -rf "$dir/crypto"
"$bin/cryptogen" generate --config="$dir/crypto-config.yaml" --output="$dir/crypto" >/dev/null

ord=$dir/crypto/ordererOrganizations/example.com
org1=$dir/crypto/peerOrganizations/org1.example.com
mkdir -p "$dir/config"
cat > "$dir/config/configtx.yaml" <<EOF
Organizations:
  - &OrdererOrg
    Name: OrdererOrg
    ID: OrdererMSP
    MSPDir: $ord/msp
    Policies:
      Readers: {Type: Signature, Rule: "OR('OrdererMSP.member')"}
      Writers: {Type: Signature, Rule: "OR('OrdererMSP.member')"}
      Admins: {Type: Signature, Rule: "OR('OrdererMSP.admin')"}
    OrdererEndpoints:
      - 127.0.0.1:$orderer_port
  - &Org1
    Name: Org1MSP
    ID: Org1MSP
    MSPDir: $org1/msp
    Policies:
      Readers: {Type: Signature, Rule: "OR('Org1MSP.admin', 'Org1MSP.peer', 'Org1MSP.client')"}
      Writers: {Type: Signature, Rule: "OR('Org1MSP.admin', 'Org1MSP.client')"}
      Admins: {Type: Signature, Rule: "OR('Org1MSP.admin')"}
      Endorsement: {Type: Signature, Rule: "OR('Org1MSP.peer')"}
Capabilities:
  Channel: &ChannelCapabilities {V3_0: true}
  Orderer: &OrdererCapabilities {V2_0: true}
  Application: &ApplicationCapabilities {V2_5: true}
Application: &ApplicationDefaults
  Organizations:
  Policies:
    Readers: {Type: ImplicitMeta, Rule: "ANY Readers"}
    Writers: {Type: ImplicitMeta, Rule: "ANY Writers"}
    Admins: {Type: ImplicitMeta, Rule: "MAJORITY Admins"}
    LifecycleEndorsement: {Type: ImplicitMeta, Rule: "MAJORITY Endorsement"}
    Endorsement: {Type: ImplicitMeta, Rule: "MAJORITY Endorsement"}
  Capabilities: *ApplicationCapabilities
Orderer: &OrdererDefaults
  OrdererType: etcdraft
  EtcdRaft:
    Consenters:
      - Host: 127.0.0.1
        Port: $orderer_port
        ClientTLSCert: $ord/orderers/orderer.example.com/tls/server.crt
        ServerTLSCert: $ord/orderers/orderer.example.com/tls/server.crt
  BatchTimeout: 250ms
  BatchSize:
    MaxMessageCount: 10
    AbsoluteMaxBytes: 10 MB
    PreferredMaxBytes: 512 KB
  Organizations:
  Policies:
    Readers: {Type: ImplicitMeta, Rule: "ANY Readers"}
    Writers: {Type: ImplicitMeta, Rule: "ANY Writers"}
    Admins: {Type: ImplicitMeta, Rule: "MAJORITY Admins"}
    BlockValidation: {Type: ImplicitMeta, Rule: "ANY Writers"}
Channel: &ChannelDefaults
  Policies:
    Readers: {Type: ImplicitMeta, Rule: "ANY Readers"}
    Writers: {Type: ImplicitMeta, Rule: "ANY Writers"}
    Admins: {Type: ImplicitMeta, Rule: "MAJORITY Admins"}
  Capabilities: *ChannelCapabilities
Profiles:
  MedtechChannel:
    <<: *ChannelDefaults
    Orderer:
      <<: *OrdererDefaults
      Organizations: [*OrdererOrg]
      Capabilities: *OrdererCapabilities
    Application:
      <<: *ApplicationDefaults
      Organizations: [*Org1]
      Capabilities: *ApplicationCapabilities
EOF
"$bin/configtxgen" -configPath "$dir/config" -profile MedtechChannel -channelID "$channel" \
  -outputBlock "$dir/$channel.block" >"$dir/configtxgen.log" 2>&1

# The release's orderer.yaml and core.yaml, read from shared/ (read-only), everything else by
# environment.
otls=$ord/orderers/orderer.example.com/tls
mkdir -p "$dir/orderer"
env FABRIC_CFG_PATH="$FABRIC_DIR/config" \
  ORDERER_GENERAL_LISTENADDRESS=127.0.0.1 \
  ORDERER_GENERAL_LISTENPORT="$orderer_port" \
  ORDERER_GENERAL_LOCALMSPID=OrdererMSP \
  ORDERER_GENERAL_LOCALMSPDIR="$ord/orderers/orderer.example.com/msp" \
  ORDERER_GENERAL_TLS_ENABLED=true \
  ORDERER_GENERAL_TLS_PRIVATEKEY="$otls/server.key" \
  ORDERER_GENERAL_TLS_CERTIFICATE="$otls/server.crt" \
  ORDERER_GENERAL_TLS_ROOTCAS="[$otls/ca.crt]" \
  ORDERER_GENERAL_CLUSTER_CLIENTCERTIFICATE="$otls/server.crt" \
  ORDERER_GENERAL_CLUSTER_CLIENTPRIVATEKEY="$otls/server.key" \
  ORDERER_GENERAL_CLUSTER_ROOTCAS="[$otls/ca.crt]" \
  ORDERER_GENERAL_BOOTSTRAPMETHOD=none \
  ORDERER_CHANNELPARTICIPATION_ENABLED=true \
  ORDERER_ADMIN_LISTENADDRESS="127.0.0.1:$admin_port" \
  ORDERER_ADMIN_TLS_ENABLED=true \
  ORDERER_ADMIN_TLS_PRIVATEKEY="$otls/server.key" \
  ORDERER_ADMIN_TLS_CERTIFICATE="$otls/server.crt" \
  ORDERER_ADMIN_TLS_CLIENTAUTHREQUIRED=true \
  ORDERER_ADMIN_TLS_CLIENTROOTCAS="[$otls/ca.crt]" \
  ORDERER_FILELEDGER_LOCATION="$dir/orderer/ledger" \
  ORDERER_CONSENSUS_WALDIR="$dir/orderer/wal" \
  ORDERER_CONSENSUS_SNAPDIR="$dir/orderer/snap" \
  ORDERER_OPERATIONS_LISTENADDRESS="127.0.0.1:$ops_o" \
  ORDERER_METRICS_PROVIDER=disabled \
  "$bin/orderer" >"$dir/orderer.log" 2>&1 &
echo $! >"$dir/orderer.pid"

wait_port() {
  for _ in $(seq 200); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
    sleep 0.05
  done
  echo "fabric-network: nothing listens on 127.0.0.1:$1 after 10 s" >&2
  return 1
}
wait_port "$admin_port"
"$bin/osnadmin" channel join --channelID "$channel" --config-block "$dir/$channel.block" \
  -o "127.0.0.1:$admin_port" --ca-file "$otls/ca.crt" \
  --client-cert "$otls/server.crt" --client-key "$otls/server.key" >"$dir/osnadmin.log" 2>&1

ptls=$org1/peers/peer0.org1.example.com/tls
mkdir -p "$dir/peer" "$dir/builders/ccaas/bin"
cp "$bin"/ccaas/detect "$bin"/ccaas/build "$bin"/ccaas/release "$dir/builders/ccaas/bin/"
peer_env=(
  FABRIC_CFG_PATH="$FABRIC_DIR/config"
  CORE_PEER_ID=peer0.org1.example.com
  CORE_PEER_ADDRESS="127.0.0.1:$peer_port"
  CORE_PEER_LISTENADDRESS="127.0.0.1:$peer_port"
  CORE_PEER_CHAINCODEADDRESS="127.0.0.1:$cc_port"
  CORE_PEER_CHAINCODELISTENADDRESS="127.0.0.1:$cc_port"
  CORE_PEER_GOSSIP_EXTERNALENDPOINT="127.0.0.1:$peer_port"
  CORE_PEER_GOSSIP_BOOTSTRAP="127.0.0.1:$peer_port"
  CORE_PEER_LOCALMSPID=Org1MSP
  CORE_PEER_MSPCONFIGPATH="$org1/peers/peer0.org1.example.com/msp"
  CORE_PEER_TLS_ENABLED=true
  CORE_PEER_TLS_CERT_FILE="$ptls/server.crt"
  CORE_PEER_TLS_KEY_FILE="$ptls/server.key"
  CORE_PEER_TLS_ROOTCERT_FILE="$ptls/ca.crt"
  CORE_PEER_FILESYSTEMPATH="$dir/peer"
  CORE_LEDGER_SNAPSHOTS_ROOTDIR="$dir/peer/snapshots"
  CORE_VM_ENDPOINT=
  CORE_CHAINCODE_EXTERNALBUILDERS="[{name: ccaas, path: $dir/builders/ccaas, propagateEnvironment: [HOME]}]"
  CORE_OPERATIONS_LISTENADDRESS="127.0.0.1:$ops_p"
  CORE_METRICS_PROVIDER=disabled
)
env "${peer_env[@]}" "$bin/peer" node start >"$dir/peer.log" 2>&1 &
echo $! >"$dir/peer.pid"
wait_port "$peer_port"

admin_env=(
  "${peer_env[@]}"
  CORE_PEER_MSPCONFIGPATH="$org1/users/Admin@org1.example.com/msp"
)
env "${admin_env[@]}" "$bin/peer" channel join -b "$dir/$channel.block" >"$dir/join.log" 2>&1
# The peer has the channel once it answers for it.
for i in $(seq 100); do
  if env "${admin_env[@]}" "$bin/peer" channel getinfo -c "$channel" >/dev/null 2>&1; then break; fi
  [ "$i" = 100 ] && { echo "fabric-network: the peer did not join $channel" >&2; exit 1; }
  sleep 0.1
done

if [ -n "${ANCHOR_CHAINCODE_BIN:-}" ]; then
  # Chaincode as a service: the package holds only where the peer dials it.
  pkg=$dir/anchor-pkg
  mkdir -p "$pkg"
  printf '{"address":"127.0.0.1:%s","dial_timeout":"10s","tls_required":false}\n' "$anchor_port" \
    >"$pkg/connection.json"
  printf '{"type":"ccaas","label":"medtech-anchor_1"}\n' >"$pkg/metadata.json"
  (cd "$pkg" && tar czf code.tar.gz connection.json && tar czf "$dir/medtech-anchor.tgz" metadata.json code.tar.gz)
  env "${admin_env[@]}" "$bin/peer" lifecycle chaincode install "$dir/medtech-anchor.tgz" \
    >"$dir/cc-install.log" 2>&1
  package_id=$(env "${admin_env[@]}" "$bin/peer" lifecycle chaincode calculatepackageid \
    "$dir/medtech-anchor.tgz" 2>>"$dir/cc-install.log")
  env CHAINCODE_SERVER_ADDRESS="127.0.0.1:$anchor_port" CHAINCODE_ID="$package_id" \
    MEDTECH_ANCHOR_ADMIN_MSPS=Org1MSP "$ANCHOR_CHAINCODE_BIN" >"$dir/chaincode.log" 2>&1 &
  echo $! >"$dir/chaincode.pid"
  wait_port "$anchor_port"
  orderer_tls=(-o "127.0.0.1:$orderer_port" --tls --cafile "$otls/ca.crt")
  # The orderer may still be electing its Raft leader (SERVICE_UNAVAILABLE), more so on a busy
  # machine: retry each lifecycle transaction until its effect is visible, for up to 60 s.
  approved() {
    env "${admin_env[@]}" "$bin/peer" lifecycle chaincode checkcommitreadiness \
      --channelID "$channel" --name medtech-anchor --version 1 --sequence 1 --output json \
      2>/dev/null | grep -q '"Org1MSP": true'
  }
  committed() {
    env "${admin_env[@]}" "$bin/peer" lifecycle chaincode querycommitted -C "$channel" \
      -n medtech-anchor >/dev/null 2>&1
  }
  for i in $(seq 120); do
    approved && break
    env "${admin_env[@]}" "$bin/peer" lifecycle chaincode approveformyorg "${orderer_tls[@]}" \
      --channelID "$channel" --name medtech-anchor --version 1 --package-id "$package_id" \
      --sequence 1 >>"$dir/cc-approve.log" 2>&1 || true
    [ "$i" = 120 ] && { echo "fabric-network: medtech-anchor was not approved" >&2; exit 1; }
    approved && break
    sleep 0.5
  done
  for i in $(seq 120); do
    committed && break
    env "${admin_env[@]}" "$bin/peer" lifecycle chaincode commit "${orderer_tls[@]}" \
      --channelID "$channel" --name medtech-anchor --version 1 --sequence 1 \
      --peerAddresses "127.0.0.1:$peer_port" --tlsRootCertFiles "$ptls/ca.crt" \
      >>"$dir/cc-commit.log" 2>&1 || true
    [ "$i" = 120 ] && { echo "fabric-network: medtech-anchor was not committed" >&2; exit 1; }
    committed && break
    sleep 0.5
  done
fi

user=$org1/users/User1@org1.example.com/msp
cat > "$dir/network.env" <<EOF
FABRIC_PEER=127.0.0.1:$peer_port
FABRIC_ORDERER=127.0.0.1:$orderer_port
FABRIC_TLS_CA=$ptls/ca.crt
FABRIC_ORDERER_TLS_CA=$otls/ca.crt
FABRIC_MSP_ID=Org1MSP
FABRIC_USER_CERT=$(ls "$user"/signcerts/*.pem)
FABRIC_USER_KEY=$(ls "$user"/keystore/*)
FABRIC_ADMIN_MSP=$org1/users/Admin@org1.example.com/msp
FABRIC_CHANNEL=$channel
FABRIC_ADMIN_CERT=$(ls "$org1"/users/Admin@org1.example.com/msp/signcerts/*.pem)
FABRIC_ADMIN_KEY=$(ls "$org1"/users/Admin@org1.example.com/msp/keystore/*)
FABRIC_CHAINCODE=${ANCHOR_CHAINCODE_BIN:+medtech-anchor}
EOF
echo "fabric-network: up in $dir (peer 127.0.0.1:$peer_port, orderer 127.0.0.1:$orderer_port, channel $channel)"
