"""The Docker engine on a host: install plan and upgrade. Imports the stages below it."""
