# molgan HTTP service: `docker build -t molgan . && docker run -p 8000:8000 molgan`
#
# Stages:
#   deps     the dependencies, in a virtual environment at /opt/venv (rebuilt only when
#            pyproject.toml changes)
#   wheel    molgan itself, built into a wheel (rebuilt on every source change)
#   runtime  a clean base with the venv copied in, then the wheel installed on top as its own
#            small layer, so a source change does not produce a new 1 GB layer; non-root.
# All stages share one base, so the venv's interpreter links stay valid.

FROM python:3.11-slim AS deps

# bash with pipefail, so a failing command on the left of a pipe fails the build.
SHELL ["/bin/bash", "-o", "pipefail", "-c"]

# PyTorch is taken from its CPU-only index so no CUDA libraries end up in the image.
# A local wheel folder can be used instead, e.g. with podman:
#   podman build -v /opt/wheels:/wheels:ro \
#     --build-arg TORCH_INDEX_URL=https://pypi.org/simple --build-arg PIP_FIND_LINKS=/wheels .
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
# Read by pip itself when given; left unset they change nothing.
# PIP_CERT: a CA bundle for networks whose HTTPS proxy re-signs traffic.
# PIP_FIND_LINKS: a folder of wheels to prefer (see above).
ARG PIP_CERT
ARG PIP_FIND_LINKS

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore

# A venv rather than the system interpreter: Debian-based Pythons refuse system-wide
# pip installs ("externally managed"), and a venv is a single folder to copy.
RUN python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

WORKDIR /src

# The dependency list is read from pyproject.toml so it cannot drift, at the versions
# constraints.txt pins (those the tests ran against). torch goes first, from its CPU index;
# the rest then finds it already satisfied. Then ~230 MB that serving never
# uses is removed: torch's C++ test programs, headers and CMake files (only for compiling
# extensions), protoc, and the packages' own test suites.
COPY pyproject.toml constraints.txt ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" > /tmp/requirements.txt \
    && grep -E '^torch([<>=!~ ]|$)' /tmp/requirements.txt > /tmp/torch.txt \
    && pip install --index-url "$TORCH_INDEX_URL" -r /tmp/torch.txt \
    && pip install -c constraints.txt -r /tmp/requirements.txt \
    && if pip list --format=freeze | grep -iE '^(nvidia-|triton)'; then \
           echo "CUDA packages found in a CPU-only image" >&2; exit 1; \
       fi \
    && site=$(python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])') \
    && rm -rf "$site"/torch/test "$site"/torch/include "$site"/torch/share/cmake \
              "$site"/torch/bin/protoc* "$site"/torch/bin/*Test "$site"/torch/bin/test_* \
    && find "$site" -depth -type d -name tests -path '*/site-packages/*/tests' -exec rm -rf {} +


FROM deps AS wheel

# The source, with every bundled model in molgan/assets (each `<name>.safetensors` and its
# `<name>.eval.json`) as package data. setuptools is
# already in the venv (torch needs it), so the build needs no network.
COPY README.md ./
COPY molgan ./molgan
COPY api ./api
COPY training ./training
RUN pip wheel --no-deps --no-build-isolation --wheel-dir /dist .


FROM python:3.11-slim AS runtime

# RDKit's drawing code (behind /v1/depict) links against these X11 client libraries; no X
# server is involved. Versions are not pinned (DL3008): the base image's Debian release
# already fixes them, and pinned versions break the build whenever Debian ships a fix.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends libxrender1 libxext6 libexpat1 \
    && apt-get clean \
    && rm -rf /var/lib/apt/lists/*

# A fixed uid/gid so mounted checkpoint folders can be made readable for it.
RUN groupadd --system --gid 10001 molgan \
    && useradd --system --uid 10001 --gid molgan --create-home --home-dir /home/molgan molgan

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore \
    MPLCONFIGDIR=/tmp/matplotlib

COPY --from=deps /opt/venv /opt/venv
# COPY rather than a bind mount from the wheel stage: some builders leave such a mount out of
# the cache key and would keep serving an old wheel. The import fails the build, not the
# first start, if a shared library is missing; so does a wheel without the bundled models,
# which the server loads (all of them) by default.
COPY --from=wheel /dist /tmp/dist
RUN pip install --no-deps --no-index /tmp/dist/*.whl \
    && rm -rf /tmp/dist \
    && python -c "import molgan.api.app, molgan.cli" \
    && python -c "from molgan.checkpoint import bundled_models; print('bundled models:', *bundled_models()); assert 'qm9' in bundled_models()"

# Settings are MOLGAN_* environment variables (see api/settings.py). By default the server
# serves every bundled model; MOLGAN_MODELS names other checkpoints instead (a folder or a
# comma-separated list of files, each served under its file's stem), e.g. in a mounted volume:
#   docker run -v "$PWD/checkpoints:/checkpoints:ro" -e MOLGAN_MODELS=/checkpoints -p 8000:8000 molgan
# MOLGAN_DEFAULT_MODEL picks the model of requests that name none; MOLGAN_CHECKPOINT serves
# one file.
ENV PYTHONDONTWRITEBYTECODE=1

USER 10001:10001
WORKDIR /home/molgan

EXPOSE 8000

# The interpreter's urllib, so the image needs no curl. Any error, including the 503 that
# /ready answers while the model is still loading, exits non-zero.
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/ready', timeout=4)"]

# Exec form: molgan (uvicorn) is PID 1 and receives SIGTERM directly.
ENTRYPOINT ["molgan"]
CMD ["serve", "--host", "0.0.0.0", "--port", "8000"]
