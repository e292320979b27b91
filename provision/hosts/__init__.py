"""Where hosts come from: the providers (lab, static, DigitalOcean) and address choice.
Imports base/ and remote/."""
