#!/bin/sh
# Installs the system packages MedTech Chain builds and tests against, on Debian/Ubuntu:
# GMP (big integers), protoc (wire schemas; the well-known types for checking the Fabric subset
# against the real fabric-protos), and Chromium with its WebDriver for the dashboard's
# browser tests. Idempotent: does nothing when everything is already there.
set -eu
# openapi-spec-validator (PyPI) checks docs/openapi.json in the tests, against a real validator.
if ! python3 -c "import openapi_spec_validator" 2>/dev/null; then
  echo "setup: installing openapi-spec-validator (pip)"
  python3 -m pip install --quiet "openapi-spec-validator==0.9.0" \
    || python3 -m pip install --quiet --break-system-packages "openapi-spec-validator==0.9.0"
fi
PACKAGES="libgmp-dev protobuf-compiler libprotobuf-dev chromium chromium-driver"
missing=""
for p in $PACKAGES; do
  dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"
done
if [ -z "$missing" ]; then
  exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  SUDO="sudo"
fi
echo "setup: installing$missing"
$SUDO apt-get update -q
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends $missing
