# syntax=docker/dockerfile:1
# charnn: the API (default command) and the training worker (`charnn worker`), one image.
#   docker build -t charnn .                                   CPU build of PyTorch
#   docker build -t charnn:cuda \
#     --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu128 .   CUDA build
# Without registry access (air-gapped), from a local base image and a wheelhouse:
#   pip download --only-binary=:all: -d wheelhouse -r requirements.lock \
#       torch==2.13.0 setuptools wheel                              on a machine with an index
#   docker build -t charnn --build-arg BASE_IMAGE=my-python:3.11 \
#     --build-arg WHEELS_ONLY=1 .
# BASE_IMAGE needs python3 (3.11, with venv) and useradd; Debian's python3-venv and
# passwd packages are enough.
ARG BASE_IMAGE=python:3.11-slim

FROM ${BASE_IMAGE} AS build
ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
# Non-empty: install only from wheelhouse/, never from an index.
ARG WHEELS_ONLY=
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_FIND_LINKS=/wheels \
    PATH=/opt/venv/bin:$PATH
COPY wheelhouse/ /wheels/
# WHEELS_ONLY holds pip to wheelhouse/ through the virtual environment's own pip.conf,
# removed once everything is installed.
# Three layers, slowest-changing first: torch (its own index), the locked dependencies,
# then charnn itself, so a code change reinstalls nothing but charnn.
RUN python3 -m venv /opt/venv \
 && if [ -n "$WHEELS_ONLY" ]; then printf '[global]\nno-index = true\n' >/opt/venv/pip.conf; fi \
 && pip install --no-deps "torch==${TORCH_VERSION}" --index-url "${TORCH_INDEX}"
COPY requirements.lock /src/
RUN pip install --requirement /src/requirements.lock
WORKDIR /src
COPY pyproject.toml README.md ./
COPY app ./app
RUN pip install --no-deps . \
 && pip check \
 && rm -f /opt/venv/pip.conf

FROM ${BASE_IMAGE} AS runtime
RUN useradd --create-home --uid 10001 charnn \
 && mkdir -p /data/models_store \
 && chown charnn:charnn /data/models_store
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    CHARNN_STORE_DIR=/data/models_store
USER 10001:10001
WORKDIR /home/charnn
VOLUME ["/data/models_store"]
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=5s --start-period=40s --retries=3 \
  CMD ["charnn", "check", "--url", "http://127.0.0.1:8000/readyz"]
CMD ["charnn", "serve", "--host", "0.0.0.0", "--port", "8000"]
