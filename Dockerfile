FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY schemas schemas
COPY streams streams
COPY detectors detectors
COPY clients clients
RUN pip install --no-cache-dir .
ENV TOKENBRAKE_HOME=/var/lib/tokenbrake TOKENBRAKE_WEB_HOST=0.0.0.0
EXPOSE 6066
ENTRYPOINT ["tokenbrake"]
CMD ["run"]
