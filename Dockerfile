# molgan HTTP service: `docker build -t molgan . && docker run -p 8000:8000 molgan`
#
# Two stages: `builder` installs everything into a virtual environment at /opt/venv,
# `runtime` copies only that environment onto a clean base and runs it as a non-root user.
# The base is the same in both stages, so the venv's interpreter links stay valid.

FROM python:3.11-slim AS builder

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

# Dependencies first, in their own layer: it is rebuilt only when pyproject.toml changes,
# not on every source edit. The list is read from pyproject.toml so it cannot drift.
# Then ~230 MB that serving never uses is removed: torch's C++ test programs, headers and
# CMake files (only for compiling extensions), protoc, and the packages' own test suites.
COPY pyproject.toml ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" > /tmp/requirements.txt \
    && grep -E '^torch([<>=!~ ]|$)' /tmp/requirements.txt > /tmp/torch.txt \
    && pip install --index-url "$TORCH_INDEX_URL" -r /tmp/torch.txt \
    && pip install -r /tmp/requirements.txt \
    && if pip list --format=freeze | grep -iE '^(nvidia-|triton)'; then \
           echo "CUDA packages found in a CPU-only image" >&2; exit 1; \
       fi \
    && site=$(python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])') \
    && rm -rf "$site"/torch/test "$site"/torch/include "$site"/torch/share/cmake \
              "$site"/torch/bin/protoc* "$site"/torch/bin/*Test "$site"/torch/bin/test_* \
    && find "$site" -depth -type d -name tests -path '*/site-packages/*/tests' -exec rm -rf {} +

# The source, with the bundled checkpoint in molgan/assets as package data.
COPY README.md ./
COPY molgan ./molgan
COPY api ./api
COPY training ./training
RUN pip install --no-deps . \
    && python -c "import molgan"


FROM python:3.11-slim AS runtime

# A fixed uid/gid so mounted checkpoint folders can be made readable for it.
RUN groupadd --system --gid 10001 molgan \
    && useradd --system --uid 10001 --gid molgan --create-home --home-dir /home/molgan molgan

COPY --from=builder /opt/venv /opt/venv

# MOLGAN_* variables are the service's settings. MOLGAN_CHECKPOINT points at a
# checkpoint to serve instead of the bundled one, e.g. a file in a mounted volume:
#   docker run -v "$PWD/runs/exp1:/checkpoints:ro" \
#     -e MOLGAN_CHECKPOINT=/checkpoints/model.safetensors -p 8000:8000 molgan
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    MPLCONFIGDIR=/tmp/matplotlib

USER 10001:10001
WORKDIR /home/molgan

EXPOSE 8000

# The interpreter's urllib, so the image needs no curl. Any error, including a non-200
# answer from /ready while the model is still loading, exits non-zero.
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/ready', timeout=4)"]

# Exec form: molgan (uvicorn) is PID 1 and receives SIGTERM directly.
ENTRYPOINT ["molgan"]
CMD ["serve", "--host", "0.0.0.0", "--port", "8000"]
