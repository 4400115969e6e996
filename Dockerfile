FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY schemas schemas
COPY streams streams
COPY detectors detectors
COPY clients clients
RUN pip install --no-cache-dir '.[worker]'
# the worker creates its home at start-up too; created here so a read-only root still works with a volume
RUN mkdir -p /var/lib/tokenbrake
ENV TOKENBRAKE_HOME=/var/lib/tokenbrake TOKENBRAKE_WEB_HOST=0.0.0.0
EXPOSE 6066
ENTRYPOINT ["tokenbrake"]
CMD ["run"]
