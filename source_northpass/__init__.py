"""source-northpass: an Airbyte source for the Northpass LMS API (declarative manifest + components)."""
