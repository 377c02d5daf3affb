# The platform image: Airbyte's manifest runner with this connector's manifest and components.
# The runner finds them at /airbyte/integration_code/source_declarative_manifest/ and runs the
# manifest locally (no manifest injected into the config). Keep the tag equal to metadata.yaml.
FROM docker.io/airbyte/source-declarative-manifest:7.39.1

WORKDIR /airbyte/integration_code
COPY manifest.yaml ./source_declarative_manifest/manifest.yaml
COPY source_northpass/components.py ./source_declarative_manifest/components.py
