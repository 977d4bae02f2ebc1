# seqserve: the gRPC model server with the committed models of exported/ (see docs/deploy.md).
#
#   docker build -t seqserve:0.1.0 .
#   docker run --rm --read-only -p 50051:50051 -p 9090:9090 seqserve:0.1.0
#
# Two stages: `build` installs the project into a virtual environment (pip runs setup.py, which
# generates the gRPC stubs with grpcio-tools in pip's isolated build environment), and the runtime
# stage copies only that environment and the models. No torch, no training code or data, no pip.

FROM python:3.11-slim AS build

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

RUN python -m venv /opt/seqserve
WORKDIR /src

# The serving dependencies first, read from pyproject.toml alone, so a code change reuses this layer.
COPY pyproject.toml ./
RUN python -c "import tomllib; print(*tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies'], sep='\n')" \
        > requirements.txt \
    && /opt/seqserve/bin/pip install --no-cache-dir -r requirements.txt

# Then the project (service/ only: training/ is not in the build context, see .dockerignore). pip
# compiles every module to bytecode here, so the read-only runtime never needs to write any.
COPY setup.py README.md ./
COPY proto/ proto/
COPY service/ service/
RUN /opt/seqserve/bin/pip install --no-cache-dir --no-deps . \
    && /opt/seqserve/bin/pip check \
    && /opt/seqserve/bin/python -m pip uninstall --yes --quiet pip setuptools


FROM python:3.11-slim

LABEL org.opencontainers.image.title="seqserve" \
      org.opencontainers.image.description="gRPC model server for attention-based sequence models, on onnxruntime" \
      org.opencontainers.image.version="0.1.0"

# A fixed numeric uid/gid, so Kubernetes can verify runAsNonRoot from the image alone.
RUN groupadd --gid 10001 seqserve \
    && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin seqserve

COPY --from=build /opt/seqserve /opt/seqserve
# Owned by root and not writable by the server: the models are verified against their manifests.
COPY exported/ /srv/seqserve/exported/

# OMP_NUM_THREADS=1 keeps numpy's BLAS from starting a thread per host core; onnxruntime's own
# budget is SEQSERVE_THREADS for all models together (0, the default: from the CPU limit).
ENV PATH=/opt/seqserve/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    OMP_NUM_THREADS=1 \
    SEQSERVE_MODEL_DIR=/srv/seqserve/exported

WORKDIR /srv/seqserve
USER 10001:10001

# gRPC (SEQSERVE_PORT) and Prometheus metrics (SEQSERVE_METRICS_PORT).
EXPOSE 50051 9090

# grpc.health.v1 Check on "" through the CLI, which exits non-zero unless SERVING; `|| exit 1`
# because Docker reserves exit status 2 (the CLI's status for an unreachable server).
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
    CMD ["sh", "-c", "seqserve --target 127.0.0.1:${SEQSERVE_PORT:-50051} --timeout 3 health || exit 1"]

# Exec form: the server is PID 1 and gets SIGTERM itself (NOT_SERVING at once, still answering for
# SEQSERVE_DRAIN_SECONDS, then SEQSERVE_GRACE_SECONDS for calls in flight, exit 0). Arguments given
# to `docker run IMAGE ...` are its flags.
ENTRYPOINT ["python", "-m", "service"]
CMD []
