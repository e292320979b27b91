"""The Docker engine on a host: the install plan (facts in, commands out). Imports the stages
below it; `engine upgrade` (drains, quorum, the managers lock) is an orchestration on top."""
