# Real servers for development and tests; included by the top-level Makefile.
# Paths come from this file's own location, so it works from any clone and
# under `make -C`. Settings are env vars read by the scripts:
#   CASETRAIL_KAFKA_DIR, CASETRAIL_KAFKA_PORT (19092), CASETRAIL_KAFKA_CONTROLLER_PORT (19093)
#   CASETRAIL_PG_DIR, CASETRAIL_PG_PORT (15432)
# kafka-start and postgres-start record the bootstrap and DSN they started in var/servers.env,
# with the dirs and controller port the scripts resolved from these settings (so that the fault
# suite's restarts find them: infra/servers.py script_environment) (infra/record-server.sh),
# which the tests connect to unless CASETRAIL_KAFKA_BOOTSTRAP and
# CASETRAIL_PG_DSN are set: another checkout's servers (or CI's, on the default ports) are
# never this one's by default.

CASETRAIL_INFRA := $(patsubst %/,%,$(dir $(abspath $(lastword $(MAKEFILE_LIST)))))

.PHONY: kafka-install kafka-start kafka-stop kafka-wipe \
        postgres-install postgres-start postgres-stop postgres-wipe \
        servers-install servers-start servers-stop servers-wipe

kafka-install:
	@"$(CASETRAIL_INFRA)/kafka/install.sh"
kafka-start:
	@bootstrap="$$("$(CASETRAIL_INFRA)/kafka/start.sh")" \
	  && "$(CASETRAIL_INFRA)/record-server.sh" CASETRAIL_KAFKA_BOOTSTRAP "$$bootstrap" \
	  && printf '%s\n' "$$bootstrap"
kafka-stop:
	@"$(CASETRAIL_INFRA)/kafka/stop.sh"
kafka-wipe:
	@"$(CASETRAIL_INFRA)/kafka/wipe.sh"

postgres-install:
	@"$(CASETRAIL_INFRA)/postgres/install.sh"
postgres-start:
	@dsn="$$("$(CASETRAIL_INFRA)/postgres/start.sh")" \
	  && "$(CASETRAIL_INFRA)/record-server.sh" CASETRAIL_PG_DSN "$$dsn" \
	  && printf '%s\n' "$$dsn"
postgres-stop:
	@"$(CASETRAIL_INFRA)/postgres/stop.sh"
postgres-wipe:
	@"$(CASETRAIL_INFRA)/postgres/wipe.sh"

servers-install: kafka-install postgres-install
servers-start: kafka-start postgres-start
servers-stop: kafka-stop postgres-stop
servers-wipe: kafka-wipe postgres-wipe
