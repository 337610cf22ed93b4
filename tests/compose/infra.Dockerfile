# Stand-ins for the registry images docker-compose.yml names, for the compose test only (no
# registry is reachable on the build machines). Built by authbus_dev.images from a context it
# assembles (kafka/: the Maven jars, the scripts beside this file and the local broker's log4j2
# configuration, authbus_dev.infra.LOG4J2), FROM the debootstrapped
# bookworm base. Each behaves like the image it replaces where the compose file relies on it:
# same paths, same environment, same default command.

ARG BASE
ARG UV_IMAGE

FROM ${UV_IMAGE} AS uv

# apache/kafka: KAFKA_* variables become server properties; /opt/kafka/bin/kafka-topics.sh is
# there for the compose healthcheck.
FROM ${BASE} AS kafka
RUN apt-get update -q \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends openjdk-17-jre-headless \
    && rm -rf /var/lib/apt/lists/*
COPY kafka/libs /opt/kafka/libs
COPY kafka/entrypoint.sh kafka/kafka-topics.sh /opt/kafka/bin/
COPY kafka/log4j2.properties /opt/kafka/config/
EXPOSE 9092 9093
CMD ["/opt/kafka/bin/entrypoint.sh"]

# mongo: SecantusDB, a MongoDB-wire server, with its data at /data/db like mongod.
FROM ${BASE} AS secantusdb
ARG SECANTUS_VERSION
COPY --from=uv /uv /bin/uv
RUN uv venv --quiet --python python3.11 /opt/secantus \
    && uv pip install --quiet --python /opt/secantus/bin/python "secantusdb==${SECANTUS_VERSION}" \
    && rm -rf /root/.cache /bin/uv && mkdir -p /data/db
EXPOSE 27017
CMD ["/opt/secantus/bin/secantusd-py", "--host", "0.0.0.0", "--port", "27017", "--storage-path", "/data/db", "--log-level", "WARNING"]

# prom/prometheus: Debian's package, with the official image's paths, user and command.
FROM ${BASE} AS prometheus
RUN apt-get update -q \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends prometheus \
    && rm -rf /var/lib/apt/lists/* \
    && mkdir -p /prometheus && chown nobody:nogroup /prometheus
USER nobody
EXPOSE 9090
WORKDIR /prometheus
ENTRYPOINT ["/usr/bin/prometheus"]
CMD ["--config.file=/etc/prometheus/prometheus.yml", "--storage.tsdb.path=/prometheus"]

# nginx: Debian's package; conf.d/*.conf is included as in the official image, logs go to the
# container's output.
FROM ${BASE} AS nginx
RUN apt-get update -q \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends nginx-light \
    && rm -rf /var/lib/apt/lists/* /etc/nginx/sites-enabled/default \
    && ln -sf /dev/stdout /var/log/nginx/access.log && ln -sf /dev/stderr /var/log/nginx/error.log
EXPOSE 80
STOPSIGNAL SIGQUIT
CMD ["nginx", "-g", "daemon off;"]
