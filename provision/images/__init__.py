"""Images: built here (Debian, busybox, the agent), saved from a local engine and pushed to
nodes. Imports the stages below it."""
