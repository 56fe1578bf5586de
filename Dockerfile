# syntax=docker/dockerfile:1
# charnn: the API (default command) and the training worker (`charnn worker`), one image.
#   docker build -t charnn .                                   CPU build of PyTorch
#   docker build -t charnn:cuda \
#     --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu128 .   CUDA build
ARG PYTHON_VERSION=3.11

FROM python:${PYTHON_VERSION}-slim AS build
ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/venv/bin:$PATH
RUN python -m venv /opt/venv \
 && pip install "torch==${TORCH_VERSION}" --index-url "${TORCH_INDEX}" \
        --extra-index-url https://pypi.org/simple
WORKDIR /src
COPY pyproject.toml README.md ./
COPY app ./app
RUN pip install .

FROM python:${PYTHON_VERSION}-slim AS runtime
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
