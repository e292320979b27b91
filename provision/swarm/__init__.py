"""The swarm: the plan and the step that runs it, nodes, rotation, unlock, quorum, backup and
status. Imports the stages below it."""
