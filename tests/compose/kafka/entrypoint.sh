#!/bin/sh
# Kafka (KRaft) from the Maven jars, configured like the apache/kafka image: every KAFKA_<NAME>
# variable becomes the server property <name> (lower case; "___" -> "-", "__" -> "_",
# "_" -> "."). The storage is formatted on the first start, with CLUSTER_ID if set.
set -eu
config=/opt/kafka/config
mkdir -p "$config"
env | grep '^KAFKA_' | grep -v -E '^KAFKA_(HEAP_OPTS|OPTS|LOG4J_OPTS|JVM_PERFORMANCE_OPTS)=' |
  while IFS='=' read -r name value; do
    key=$(printf '%s' "${name#KAFKA_}" | tr 'A-Z' 'a-z' |
      sed -e 's/___/-/g' -e 's/__/@/g' -e 's/_/./g' -e 's/@/_/g')
    printf '%s=%s\n' "$key" "$value"
  done >"$config/server.properties"
export KAFKA_LOG4J_OPTS="-Dlog4j2.configurationFile=/opt/kafka/config/log4j2.properties"
java $KAFKA_LOG4J_OPTS -cp '/opt/kafka/libs/*' kafka.tools.StorageTool format \
  -t "${CLUSTER_ID:-5L6g3nShT-eMCtK--X86sw}" -c "$config/server.properties" --ignore-formatted
exec java ${KAFKA_HEAP_OPTS:--Xms256m -Xmx1g} -XX:+UseG1GC $KAFKA_LOG4J_OPTS \
  -cp '/opt/kafka/libs/*' kafka.Kafka "$config/server.properties"
