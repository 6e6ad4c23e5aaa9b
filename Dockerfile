# syntax=docker/dockerfile:1
# One image for every stage; the role is chosen by the command, e.g.
#   docker run rollstream:0.1.0 run feed --config /etc/rollstream/run.yaml
#
#   docker build -t rollstream:0.1.0 .                               # CPU (CPU-only torch)
#   docker build --build-arg VARIANT=gpu -t rollstream:0.1.0-gpu .   # CUDA (vLLM brings CUDA torch)
#
# The CUDA libraries come with the torch / vLLM wheels; GPU nodes need only the NVIDIA driver
# and container toolkit. tests/helm/test_dockerfile.py checks the extras against pyproject.toml
# and the entrypoint against its console script.

ARG PYTHON_VERSION=3.11
FROM python:${PYTHON_VERSION}-slim

# cpu | gpu
ARG VARIANT=cpu
# The pyproject extras each variant installs (s3: the S3-compatible weight store).
ARG EXTRAS_CPU=cpu,s3
ARG EXTRAS_GPU=vllm,s3
# CPU-only torch wheels live on the PyTorch index; the default index serves CUDA builds.
ARG TORCH_CPU_INDEX=https://download.pytorch.org/whl/cpu

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src
COPY pyproject.toml README.md ./
COPY rollstream ./rollstream

RUN set -eux; \
    case "$VARIANT" in \
      cpu) extras="$EXTRAS_CPU"; index="--extra-index-url $TORCH_CPU_INDEX" ;; \
      gpu) extras="$EXTRAS_GPU"; index="" ;; \
      *) echo "VARIANT must be cpu or gpu, got $VARIANT" >&2; exit 1 ;; \
    esac; \
    pip install $index "/src[$extras]"; \
    rollstream --help > /dev/null; \
    rm -rf /src

WORKDIR /
RUN useradd --uid 10001 --user-group --create-home --home-dir /home/rollstream rollstream \
    && mkdir -p /var/lib/rollstream /var/cache/rollstream /weights /models \
    && chown rollstream:rollstream /var/lib/rollstream /var/cache/rollstream /weights /models

USER 10001
WORKDIR /home/rollstream
ENV HOME=/home/rollstream \
    ROLLSTREAM_RUN_DIR=/var/lib/rollstream \
    XDG_CACHE_HOME=/var/cache/rollstream \
    HF_HOME=/var/cache/rollstream/huggingface

# /metrics and /healthz (`--metrics-port`).
EXPOSE 9100
ENTRYPOINT ["rollstream"]
CMD ["--help"]
