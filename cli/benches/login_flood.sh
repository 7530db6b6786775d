#!/bin/bash
# Usage: cli/benches/login_flood.sh BIN_DIR N [extra superlink flags...]
# Starts a TLS SuperLink with user auth on 127.0.0.1, fires N concurrent wrong-password
# `flwr login`s, and prints the SuperLink's RSS before, its peak (VmHWM) and RSS after.
set -u
BIN=$1; N=$2; shift 2
D=$(mktemp -d)
trap "rm -rf $D" EXIT
$BIN/flwr keygen --out $D >/dev/null 2>&1 || { echo keygen failed; exit 1; }
H=$(echo -n pw | $BIN/flwr hash-password)
printf '[[users]]\nname = "alice"\npassword-hash = "%s"\n' "$H" > $D/users.toml
PORT=$((20000 + RANDOM % 20000))
$BIN/flower-superlink --ssl-ca-certfile $D/certificates/ca.crt --ssl-certfile $D/certificates/server.pem \
  --ssl-keyfile $D/certificates/server.key --user-auth-config $D/users.toml \
  --fleet-api-address 127.0.0.1:0 --control-api-address 127.0.0.1:$PORT --serverappio-api-address 127.0.0.1:0 \
  --database :memory: "$@" > $D/link.log 2>&1 &
LP=$!
sleep 3
cp "$(dirname "$0")/../../apps/digits/pyproject.toml" $D/pyproject.toml
printf "\n[tool.flwr.federations.e2e]\naddress = \"127.0.0.1:$PORT\"\nroot-certificates = '$D/certificates/ca.crt'\nenable-user-auth = true\n" >> $D/pyproject.toml
rss() { grep -E "^$1:" /proc/$LP/status | awk '{print $2/1024 " MiB"}'; }
echo "before: $(rss VmRSS)"
for i in $(seq 1 $N); do
  (echo wrong | FLWR_HOME=$D/h$i $BIN/flwr login $D e2e --username alice --password-stdin > $D/o$i 2>&1) &
done
wait $(jobs -p | grep -v "^$LP$") 2>/dev/null
sleep 2
echo "peak: $(rss VmHWM)  after: $(rss VmRSS)"
echo "outcomes:"; cat $D/o* | sed 's/[0-9]\+ s/N s/' | sort | uniq -c
kill $LP; wait $LP 2>/dev/null
