#!/bin/sh
# kafka-topics.sh, as in the apache/kafka image (the compose healthcheck lists topics with it).
exec java -Xmx128m -Dlog4j2.configurationFile=/opt/kafka/config/log4j2.properties \
  -cp '/opt/kafka/libs/*' org.apache.kafka.tools.TopicCommand "$@"
