# Real servers for development and tests; included by the top-level Makefile.
# Paths come from this file's own location, so it works from any clone and
# under `make -C`. Settings are env vars read by the scripts:
#   CASETRAIL_KAFKA_DIR, CASETRAIL_KAFKA_PORT (19092), CASETRAIL_KAFKA_CONTROLLER_PORT (19093)
#   CASETRAIL_PG_DIR, CASETRAIL_PG_PORT (15432)
# Tests connect with CASETRAIL_KAFKA_BOOTSTRAP=127.0.0.1:19092 and
# CASETRAIL_PG_DSN=postgresql://postgres@127.0.0.1:15432/casetrail.

CASETRAIL_INFRA := $(patsubst %/,%,$(dir $(abspath $(lastword $(MAKEFILE_LIST)))))

.PHONY: kafka-install kafka-start kafka-stop kafka-wipe \
        postgres-install postgres-start postgres-stop postgres-wipe \
        servers-install servers-start servers-stop servers-wipe

kafka-install:
	@"$(CASETRAIL_INFRA)/kafka/install.sh"
kafka-start:
	@"$(CASETRAIL_INFRA)/kafka/start.sh"
kafka-stop:
	@"$(CASETRAIL_INFRA)/kafka/stop.sh"
kafka-wipe:
	@"$(CASETRAIL_INFRA)/kafka/wipe.sh"

postgres-install:
	@"$(CASETRAIL_INFRA)/postgres/install.sh"
postgres-start:
	@"$(CASETRAIL_INFRA)/postgres/start.sh"
postgres-stop:
	@"$(CASETRAIL_INFRA)/postgres/stop.sh"
postgres-wipe:
	@"$(CASETRAIL_INFRA)/postgres/wipe.sh"

servers-install: kafka-install postgres-install
servers-start: kafka-start postgres-start
servers-stop: kafka-stop postgres-stop
servers-wipe: kafka-wipe postgres-wipe
