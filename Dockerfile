# The gateway image; the same image runs the demo upstream in docker-compose.yml.
FROM python:3.11-slim

RUN useradd --system --uid 10001 --home-dir /srv/sso-gateway gateway
WORKDIR /srv/sso-gateway
COPY pyproject.toml README.md ./
COPY gateway ./gateway
RUN pip install --no-cache-dir . && rm -rf /root/.cache

USER gateway
EXPOSE 8443
ENTRYPOINT ["sso-gateway"]
CMD ["serve", "--config", "/etc/sso-gateway/gateway.yaml"]
