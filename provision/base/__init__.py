"""What every stage of provision/ shares: errors with exit codes, progress events, the Host and
Provider types, local commands and the cluster file as this package sees it. Imports nothing
else of provision/."""
