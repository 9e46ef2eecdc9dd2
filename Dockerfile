# Blindspot Atlas for GPU machines.
#
#   docker build -t blindspot-atlas .
#   docker run --gpus all -p 8000:8000 -v "$PWD/atlas:/atlas" blindspot-atlas            # serve /atlas
#   docker run --gpus all -v "$PWD:/work" -w /work blindspot-atlas \
#       blindspot precompute configs/laion-four-models.toml --out /work/atlas             # build one
#
# Port 8000 is the explorer; mount the atlas folder at /atlas. Model weights are read
# from the Hugging Face cache: mount one at /root/.cache/huggingface to reuse downloads.
FROM nvidia/cuda:12.4.1-cudnn-runtime-ubuntu22.04

ENV DEBIAN_FRONTEND=noninteractive PIP_NO_CACHE_DIR=1 PYTHONUNBUFFERED=1
RUN apt-get update \
 && apt-get install -y --no-install-recommends software-properties-common \
 && add-apt-repository -y ppa:deadsnakes/ppa \
 && apt-get update \
 && apt-get install -y --no-install-recommends python3.11 python3.11-venv \
 && rm -rf /var/lib/apt/lists/*

RUN python3.11 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
# A CUDA build of torch first; the package's own torch requirement is then already met.
RUN pip install torch --index-url https://download.pytorch.org/whl/cu124

WORKDIR /src
COPY pyproject.toml README.md ./
COPY app ./app
COPY backend ./backend
COPY frontend ./frontend
COPY precompute ./precompute
RUN pip install ".[datasets]"

VOLUME ["/atlas"]
EXPOSE 8000
CMD ["blindspot", "serve", "/atlas", "--host", "0.0.0.0", "--port", "8000"]
