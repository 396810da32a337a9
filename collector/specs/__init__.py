"""The specs of platforms, storage backends and jobs: discovery, settings schemas, retry policies, secrets."""
