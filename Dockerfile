# CPU image of the workbench: JupyterLab on port 8888 with the package, the notebooks and the offline MiniLM.
#   docker build -t workbench .
#   docker run --rm -p 8888:8888 -v "$PWD/runs:/work/runs" -v /path/to/data:/data workbench
# GPU: build with the CUDA wheel index of PyTorch for your CUDA version and run with --gpus all, e.g.
#   docker build --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu126 -t workbench:gpu .
#   docker run --rm --gpus all -p 8888:8888 workbench:gpu
# With the browser (for tests/test_browser.py): docker build --build-arg WITH_BROWSER=1 -t workbench:browser .
FROM python:3.11-slim

ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
# WITH_BROWSER=1 adds Debian's chromium + chromedriver (the JupyterLab browser test, static plotly export); large
ARG WITH_BROWSER=0
ENV PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false WORKBENCH_DATA=/data BROWSER_PATH=/usr/bin/chromium

RUN apt-get update && apt-get install -y --no-install-recommends git make \
 && if [ "$WITH_BROWSER" = 1 ]; then apt-get install -y --no-install-recommends chromium chromium-driver; fi \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /work
COPY requirements.txt .
# torch first, from the chosen index, so nothing else can pull a different build of it
RUN pip install --no-cache-dir "$(grep -E '^torch==' requirements.txt)" --index-url "$TORCH_INDEX" \
 && pip install --no-cache-dir -r requirements.txt \
 && python -m ipykernel install --sys-prefix --name python3
COPY pyproject.toml README.md Makefile ./
COPY workbench ./workbench
RUN pip install --no-cache-dir --no-deps -e .
COPY docs ./docs
COPY notebooks ./notebooks
COPY benchmarks ./benchmarks
COPY tests ./tests
RUN mkdir -p /data /work/runs
EXPOSE 8888
CMD ["jupyter", "lab", "--ip=0.0.0.0", "--port=8888", "--no-browser", "--allow-root", "--ServerApp.root_dir=/work"]
