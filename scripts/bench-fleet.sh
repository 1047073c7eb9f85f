#!/usr/bin/env bash
# Requests per second through nginx round-robin in front of 1, 2 and 3 fleet replicas on the
# simulated platform: a broker, three `cloak serve --fleet web` replicas, nginx terminating TLS,
# and the SDK's load generator (crates/cloak-client/examples/load.rs) sending encrypted
# inferences, every receipt verified. One machine runs all of it: see the closing figures for
# what that means on 2 cores.
#
#   scripts/bench-fleet.sh [MODEL.onnx] [INPUT.json]    (default: the demo MLP)
#
# Env: CLOAK_CONCURRENCY (16), CLOAK_SECONDS (10), PROFILE (release).
set -euo pipefail
cd "$(dirname "$0")/.."
profile=${PROFILE:-release}
flag=$([ "$profile" = release ] && echo --release || true)
cargo build -q $flag --bin cloak --example load
bin=target/$profile/cloak
load=target/$profile/examples/load
model=${1:-crates/cloak-cli/assets/demo-mlp.onnx}
tmp=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$tmp"; }
trap cleanup EXIT
input=${2:-}
if [ -z "$input" ]; then
  input=$tmp/input.json
  echo '{"inputs":[{"name":"features","datatype":"FP32","shape":[1,4],"data":[0.5,-1.0,2.0,3.0]}]}' > "$input"
fi
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

"$bin" sim init --dir "$tmp/sim" > /dev/null
mkdir -p "$tmp/models"
"$bin" model encrypt "$model" --out "$tmp/models/m.cloak" --key-out "$tmp/m.key" --name m > /dev/null
mrenclave=$(sha256sum "$bin" | cut -d' ' -f1)
printf 'trust_root = "%s"\n[sgx]\nmrenclave = ["%s"]\n' "$tmp/sim/root.der" "$mrenclave" > "$tmp/policy.toml"
"$bin" kbs init --db "$tmp/kbs.db" --admin-token-out "$tmp/admin.token" > /dev/null
kbs_port=$(port)
"$bin" kbs serve --db "$tmp/kbs.db" --listen "127.0.0.1:$kbs_port" > "$tmp/kbs.log" 2>&1 &
pids+=($!)
until grep -q "listening on" "$tmp/kbs.log"; do sleep 0.1; done
kbs=http://127.0.0.1:$kbs_port
admin=(--url "$kbs" --admin-token-file "$tmp/admin.token")
"$bin" kbs add-model "${admin[@]}" --name m --key "$tmp/m.key" --policy "$tmp/policy.toml" > /dev/null
"$bin" kbs add-fleet "${admin[@]}" --name web --policy "$tmp/policy.toml" > /dev/null

replicas=()
for i in 1 2 3; do
  p=$(port)
  mkdir -p "$tmp/r$i/models" && cp "$tmp/models/m.cloak" "$tmp/r$i/models/"
  RUST_LOG=info "$bin" serve --model-dir "$tmp/r$i/models" --listen "127.0.0.1:$p" --platform sim \
    --sim-dir "$tmp/sim" --kbs "$kbs" --fleet web --fleet-refresh 1s > "$tmp/r$i.log" 2>&1 &
  pids+=($!)
  replicas+=("127.0.0.1:$p")
done
for i in 1 2 3; do
  until grep -q "fleet keys in force" "$tmp/r$i.log" && grep -q "model key released" "$tmp/r$i.log"; do
    sleep 0.2
  done
done

python3 - "$tmp" <<'PY'
import sys, subprocess, pathlib
d = pathlib.Path(sys.argv[1])
subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                "-nodes", "-keyout", str(d / "lb.key"), "-out", str(d / "lb.pem"), "-days", "1",
                "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost",
                "-addext", "basicConstraints=critical,CA:FALSE"],
               check=True, capture_output=True)
PY

run() {
  local n=$1 lb_port upstreams=""
  lb_port=$(port)
  for r in "${replicas[@]:0:$n}"; do upstreams+="server $r max_fails=0; "; done
  mkdir -p "$tmp/nginx$n/tmp"
  cat > "$tmp/nginx$n/nginx.conf" <<CONF
daemon off; master_process off; pid $tmp/nginx$n/pid; error_log $tmp/nginx$n/error.log;
worker_rlimit_nofile 4096;
events { worker_connections 1024; }
http {
  access_log off;
  client_body_temp_path $tmp/nginx$n/tmp/b; proxy_temp_path $tmp/nginx$n/tmp/p;
  fastcgi_temp_path $tmp/nginx$n/tmp/f; uwsgi_temp_path $tmp/nginx$n/tmp/u; scgi_temp_path $tmp/nginx$n/tmp/s;
  upstream replicas { $upstreams keepalive 64; }
  server {
    listen 127.0.0.1:$lb_port ssl;
    ssl_certificate $tmp/lb.pem; ssl_certificate_key $tmp/lb.key;
    location / {
      proxy_pass https://replicas; proxy_ssl_verify off; proxy_ssl_session_reuse on;
      proxy_ssl_protocols TLSv1.3;
      proxy_http_version 1.1; proxy_set_header Connection "";
      proxy_next_upstream error timeout http_503 non_idempotent;
    }
  }
}
CONF
  nginx -p "$tmp/nginx$n" -c "$tmp/nginx$n/nginx.conf" &
  local nginx_pid=$!
  pids+=("$nginx_pid")
  until (exec 3<>"/dev/tcp/127.0.0.1/$lb_port") 2>/dev/null; do sleep 0.1; done
  local out
  out=$(CLOAK_CA=$tmp/lb.pem CLOAK_ALLOW_STATUS=OutOfDate "$load" "https://localhost:$lb_port" m "$input" \
        "$tmp/sim/root.der" "$mrenclave")
  kill "$nginx_pid"; wait "$nginx_pid" 2>/dev/null || true
  echo "{\"replicas\": $n, \"through\": \"nginx\", \"load\": $out}"
}
# The baseline: the same load straight to one replica (its own attested certificate, no nginx).
direct=$(CLOAK_ALLOW_STATUS=OutOfDate "$load" "https://${replicas[0]}" m "$input" "$tmp/sim/root.der" "$mrenclave")
echo "{\"replicas\": 1, \"through\": \"direct\", \"load\": $direct}"
for n in 1 2 3; do run "$n"; done
