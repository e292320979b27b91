"""The local lab: hosts on this one machine, each with its own network, mount and UTS
namespaces, its own sshd and (once the provisioner starts it) its own dockerd."""
