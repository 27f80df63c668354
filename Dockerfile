FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY solvers ./solvers
COPY service ./service
COPY staircase ./staircase
COPY openapi ./openapi
RUN pip install --no-cache-dir .
ENV STAIRCASE_CACHE_DIR=/var/cache/staircase
EXPOSE 8000
CMD ["uvicorn", "service.main:app", "--host", "0.0.0.0", "--port", "8000"]
