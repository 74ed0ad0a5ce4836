# Switchboard's image (docker-compose.yml builds it). At the top level beside
# docker-compose.yml: the product's layout keeps deployment files there.
#
# Build stage: the softphone's SIP stack bundled from npm (web/static/build_vendor.sh,
# as `make setup` does) and the reference receptionist's prompts spoken by espeak-ng;
# the product installed into a virtual environment. The image that runs has neither
# npm nor espeak-ng, installs nothing when it starts, and runs as an unprivileged user.
FROM python:3.11-slim-bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends nodejs npm espeak-ng \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml README.md ./
COPY asterisk-config asterisk-config
COPY pbx pbx
COPY handoff handoff
COPY web web
RUN bash web/static/build_vendor.sh
RUN python -m venv /opt/switchboard \
 && /opt/switchboard/bin/pip install --no-cache-dir '.[postgres]'
# Spoken once here; `run` keeps a prompt whose file exists (handoff.receptionist).
RUN /opt/switchboard/bin/python -c \
    "from pathlib import Path; from handoff.receptionist import make_prompts; make_prompts(Path('/data/prompts'))"

FROM python:3.11-slim-bookworm
# 10001: no account of the host's or of the Asterisk image's; compose runs Asterisk
# with the same ids (PUID/PGID) so it can read the files Switchboard writes (0600).
RUN groupadd --system --gid 10001 switchboard \
 && useradd --system --uid 10001 --gid switchboard --home-dir /data switchboard \
 && install -d -o switchboard -g switchboard /data /asterisk-config
COPY --from=build /opt/switchboard /opt/switchboard
# A named volume on /data starts with these (docker copies an image's files into an
# empty named volume), so the receptionist speaks without espeak-ng here.
COPY --from=build --chown=switchboard:switchboard /data/prompts /data/prompts
ENV PATH=/opt/switchboard/bin:$PATH \
    SWITCHBOARD_DATA_DIR=/data \
    PYTHONUNBUFFERED=1
USER switchboard
WORKDIR /data
EXPOSE 8080
# /status answers 200 only while the PBX's ARI event stream is up (503: degraded).
HEALTHCHECK --interval=15s --timeout=5s --start-period=90s --retries=3 \
  CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('SWITCHBOARD_SERVER__PORT', '8080') + '/status', timeout=4)"]
ENTRYPOINT ["switchboard"]
CMD ["run"]
