"""One file a benchmark; each registers its own `switchyard bench` subcommand (`register`, `main`)."""
